"""The review estimate on data the model never saw: AUROC for catching cutouts below review.target_dice, and
precision / recall / share reviewed at the policy calibrated at training time, beside the old
needs-manual-cutout score's AUROC, all from one `garmentseg evaluate` run.

    uv run python benchmarks/bench_review_estimate.py studio [--profile demo|cpu] [--set KEY=VALUE ...]
    uv run python benchmarks/bench_review_estimate.py real [--set training.time_budget_minutes=20 ...]
    ... [--model-uri URI]  (score an already trained model instead of training one) [--json OUT]

studio: synthesise the profile's studio (`garmentseg data synth`), train on it (`garmentseg train
--dataset`: the estimate is calibrated on its valid split) and score its test split. real: train on the
500 CCP photos and score the fixed 100-photo holdout (benchmarks/real_photos.py's folders). Every command
run is printed. A training is minutes to tens of minutes: run it under the shared CPU lock.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import emit
from real_photos import ROOT, run_json, split_folders

FIGURES = (
    "n",
    "dice_median",
    "manual_cutout_target_dice",
    "below_target_share",
    "review_auroc",
    "flag_auroc",
    "review_policy",
    "review_below",
    "review_share",
    "review_precision",
    "review_recall",
)


def studio_dataset(profile: str, work: Path, env: dict[str, str]) -> Path:
    out = work / f"studio-{profile}"
    if not (out / "raw").is_dir():
        command = [
            sys.executable,
            "-m",
            "garmentseg.cli",
            "data",
            "synth",
            "--profile",
            profile,
            "--out",
            str(out),
        ]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, env=env, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=["studio", "real"])
    parser.add_argument("--profile", default=None, help="default: demo for studio, real for real")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model-uri", default=None, help="score this model instead of training one")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "review-bench")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    profile = args.profile or ("demo" if args.data == "studio" else "real")
    env = dict(os.environ)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item!r}: expected KEY=VALUE")
        env["GARMENTSEG__" + key.replace(".", "__").upper()] = value
    if args.data == "real":
        train_dir, scored_dir = split_folders(ROOT.parent / "shared" / "data" / "ccp", ROOT / "var" / "real")
        split = "all"
    else:
        train_dir = scored_dir = studio_dataset(profile, args.work, env)
        split = "test"
    cli = [sys.executable, "-m", "garmentseg.cli"]
    started = time.monotonic()
    model_uri = args.model_uri
    if model_uri is None:
        trained = run_json([*cli, "train", "--profile", profile, "--dataset", str(train_dir), "--json"], env)
        model_uri = trained["model_uri"]
    train_minutes = (time.monotonic() - started) / 60
    evaluate = [
        *cli,
        "evaluate",
        "--profile",
        profile,
        "--model-uri",
        model_uri,
        "--dataset",
        str(scored_dir),
    ]
    summary = run_json([*evaluate, "--split", split, "--json"], env)
    row = {k: summary.get(k) for k in FIGURES}
    if row["review_share"] is not None and row["below_target_share"]:
        row["budget_over_below_share"] = round(row["review_share"] / row["below_target_share"], 3)
    emit(
        {
            "data": args.data,
            "profile": profile,
            "overrides": args.overrides,
            "model_uri": model_uri,
            "train_minutes": round(train_minutes, 1),
            **row,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
