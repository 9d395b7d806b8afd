"""Real photos: train a profile on 500 CCP photos through `garmentseg train --dataset`, score the fixed 100-photo
holdout (benchmarks/ccp_holdout.txt) with `garmentseg evaluate --dataset --json`, and print both.

    uv run python benchmarks/real_photos.py [--profile real] [--set training.epochs=8 ...] [--name ROW]
                                            [--ccp ../shared/data/ccp] [--work var/real] [--json OUT]

Every run is one row of the ablation table in docs/real-photos.md: `--set KEY=VALUE` overrides any
params.yaml key for that run (passed as GARMENTSEG__KEY=VALUE), so a row's command names exactly what it
changed. The two commands it runs are printed, so each can be repeated by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _report import emit

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT_LIST = ROOT / "benchmarks" / "ccp_holdout.txt"


def holdout_ids() -> set[str]:
    lines = HOLDOUT_LIST.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def split_folders(ccp: Path, work: Path) -> tuple[Path, Path]:
    """The CCP pairs in the data contract (the dataset's own to_contract.py), hard-linked into train/ (500)
    and holdout/ (the 100 listed); made once and reused by every row."""
    train, holdout = work / "train", work / "holdout"
    if (train / "raw").is_dir() and (holdout / "raw").is_dir():
        return train, holdout
    contract = work / "all"
    if not (contract / "raw").is_dir():
        subprocess.run([sys.executable, str(ccp / "to_contract.py"), str(contract)], check=True)
    held = holdout_ids()
    for sub in ("raw", "cutouts"):
        for folder in (train, holdout):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((contract / sub).glob("*.png")):
            garment = path.stem.rsplit("_", 1)[0]
            target = (holdout if garment in held else train) / sub / path.name
            if not target.exists():
                os.link(path, target)
    found = {p.stem.rsplit("_", 1)[0] for p in (holdout / "raw").glob("*.png")}
    if found != held:
        sys.exit(f"{HOLDOUT_LIST}: {len(held - found)} listed ids are not in {ccp}")
    return train, holdout


def run_json(command: list[str], env: dict[str, str]) -> dict:
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{command[1]} failed with exit code {done.returncode}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="real")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default=None, help="row name (default: the overrides)")
    parser.add_argument("--ccp", type=Path, default=ROOT.parent / "shared" / "data" / "ccp")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "real")
    parser.add_argument("--flip-tta", action="store_true", help="also score the holdout with flip TTA")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (args.ccp / "to_contract.py").exists():
        sys.exit(f"{args.ccp}: no CCP photos here (expected photos/, masks/ and to_contract.py)")

    train_dir, holdout_dir = split_folders(args.ccp, args.work)
    env = dict(os.environ)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=8")
        env["GARMENTSEG__" + key.replace(".", "__").upper()] = value
    name = args.name or (", ".join(args.overrides) or args.profile)
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")[:60]
    out = args.work / "runs" / slug
    shutil.rmtree(out, ignore_errors=True)
    cli = [sys.executable, "-m", "garmentseg.cli"]

    started = time.monotonic()
    trained = run_json(
        [*cli, "train", "--profile", args.profile, "--dataset", str(train_dir), "--out", str(out), "--json"],
        env,
    )
    train_minutes = (time.monotonic() - started) / 60
    evaluate = [*cli, "evaluate", "--profile", args.profile, "--model-uri", trained["model_uri"]]
    holdout = run_json(
        [*evaluate, "--dataset", str(holdout_dir), "--out", str(out / "holdout"), "--json"], env
    )
    row = {
        "name": name,
        "profile": args.profile,
        "overrides": args.overrides,
        "train_minutes": round(train_minutes, 1),
        "epochs_trained": trained["metrics"].get("epochs_trained"),
        "model_uri": trained["model_uri"],
        "run_id": trained["run_id"],
        "valid_dice_median": trained["metrics"].get("valid_dice_median"),
        "holdout": {
            k: holdout[k]
            for k in (
                "n",
                "refinement",
                "dice_median",
                "dice_mean",
                "dice_p10",
                "iou_median",
                "bf_score_median",
                "boundary_iou_0p5pct_median",
                "halo_median",
                "below_target_share",
                "review_auroc",
                "review_share",
                "review_recall",
                "flagged_share",
            )
        },
    }
    if args.flip_tta:
        tta = run_json([*evaluate, "--dataset", str(holdout_dir), "--flip-tta", "--json"], env)
        row["holdout_flip_tta"] = {
            k: tta[k] for k in ("dice_median", "dice_mean", "dice_p10", "iou_median", "bf_score_median")
        }
    emit(row, args.json)


if __name__ == "__main__":
    main()
