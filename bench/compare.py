"""Run bench.py for this fork and the original on the same GPU, one after the other, and print a table.

python bench/compare.py --orig /path/to/HRM-with-standins [--shapes sudoku arc] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(impl: str, shape: str, extra: list[str], root: Path | None) -> dict:
    cmd = [sys.executable, str(HERE / "bench.py"), "--impl", impl, "--shape", shape, *extra]
    if root is not None:
        cmd += ["--root", str(root)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
        return {
            "impl": impl,
            "shape": shape,
            "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed",
        }
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--orig", type=Path, default=None, help="checkout of the original with the two stand-ins")
    p.add_argument("--shapes", nargs="+", default=["sudoku"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-compile", action="store_true")
    args, extra = p.parse_known_args()
    if args.no_compile:
        extra.append("--no-compile")

    rows = []
    for shape in args.shapes:
        if args.orig is not None:
            rows.append(run("orig", shape, extra, args.orig))
        rows.append(run("ours", shape, extra, None))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))

    cols = ["impl", "shape", "batch", "compile", "ms_per_step", "mfu", "peak_mem_gb", "eval_puzzles_per_s", "warmup_s"]
    print("| " + " | ".join(cols) + " | speed-up (train / eval) |")
    print("|" + "---|" * (len(cols) + 1))
    base: dict[str, dict] = {}
    for r in rows:
        if "error" in r:
            print(f"| {r['impl']} | {r['shape']} | error: {r['error']} |")
            continue
        if r["impl"] == "orig":
            base[r["shape"]] = r
        ref = base.get(r["shape"])
        ratio = (
            f"{ref['ms_per_step'] / r['ms_per_step']:.2f}x / {r['eval_puzzles_per_s'] / ref['eval_puzzles_per_s']:.2f}x"
            if ref and r["impl"] == "ours"
            else ""
        )
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + f" | {ratio} |")
    if rows and "gpu" in rows[-1]:
        print(f"\n{rows[-1]['gpu']}, torch {rows[-1]['torch']}, bf16 peak measured {rows[-1]['peak_tflops']} TFLOP/s")


if __name__ == "__main__":
    main()
