"""What a cutout's transparent pixels cost `/cutout`: its PNG with the shot's colour kept under them against
`inference.to_cutout`'s (no colour where alpha is 0, as in the studio's own cutouts), in one run.

    python benchmarks/bench_cutout_png.py [--dataset DIR] [--shots 12] [--repeats 3] [--json OUT]

Each shot of a contract folder (default: a few synthetic studio garments rendered at 1152x1728 into a
temporary folder) is cut out with its own ground-truth alpha both ways and encoded by
`imageio.encode_png`; per shot the median of `--repeats`. Ratios (kept / shipped) come from the same shots in the
same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from _report import emit
from _timing import milliseconds


def colour_kept(shot: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The cutout as it was before 2026-12-04: the whole shot's colour under the alpha."""
    return np.dstack([shot, alpha])


def _encode(cut_out, shot: np.ndarray, alpha: np.ndarray, repeats: int) -> tuple[float, int]:
    """(median ms to cut out and encode, PNG bytes)."""
    from garmentseg.imageio import encode_png

    sizes: list[int] = []
    times = milliseconds(lambda: sizes.append(len(encode_png(cut_out(shot, alpha)))), repeats)
    return statistics.median(times), sizes[-1]


def measure(folder: Path, shots: int, repeats: int) -> dict:
    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import to_cutout
    from garmentseg.prepare import read_pair

    cfg = load_config("cpu")
    frame, root = load_dataset(cfg, folder)
    rows = []
    for _, row in frame.head(shots).iterrows():
        shot, truth = read_pair(root, row, cfg.validation.max_pixels)
        alpha = np.where(truth, np.uint8(255), np.uint8(0))
        kept_ms, kept = _encode(colour_kept, shot, alpha, repeats)
        shipped_ms, shipped = _encode(to_cutout, shot, alpha, repeats)
        rows.append((kept_ms, shipped_ms, kept / 1e6, shipped / 1e6))
    kept_ms, shipped_ms, kept_mb, shipped_mb = (statistics.median(col) for col in zip(*rows, strict=True))
    return {
        "shots": len(rows),
        "size": f"{shot.shape[1]}x{shot.shape[0]}",
        "encode_ms_colour_kept": round(kept_ms, 1),
        "encode_ms_shipped": round(shipped_ms, 1),
        "png_mb_colour_kept": round(kept_mb, 2),
        "png_mb_shipped": round(shipped_mb, 2),
        "encode_time_ratio_kept_over_shipped": round(kept_ms / shipped_ms, 2),
        "png_size_ratio_kept_over_shipped": round(kept_mb / shipped_mb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="a contract folder (default: 4 synthetic garments)")
    parser.add_argument("--shots", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dataset
        if folder is None:
            from garmentseg.config import load_config
            from garmentseg.data.synth import synthesize

            folder = Path(tmp) / "studio"
            synthesize(folder, max(1, -(-args.shots // 3)), 7, load_config("cpu"))
        emit(measure(folder, args.shots, args.repeats), args.json)


if __name__ == "__main__":
    main()
