"""Run bench.py for this fork and the peers' own code on the same GPU, one after the other, and print a table.

python bench/compare.py --orig /path/to/HRM-with-standins [--shapes sudoku arc] [--out results.json]
python bench/compare.py --trm /path/to/TinyRecursiveModels --models trm-mlp trm-attn      # TRM against TRM's code

Each model is timed for its peer first (the original HRM for `hrm`, TRM's code for `trm-*`), then for this fork;
the ratio column is the peer's ms/step over ours (train) and our eval puzzles/s over the peer's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(impl: str, shape: str, extra: list[str], root: Path | None, model: str = "hrm") -> dict:
    cmd = [sys.executable, str(HERE / "bench.py"), "--impl", impl, "--model", model, "--shape", shape, *extra]
    if root is not None:
        cmd += ["--root", str(root)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
        return {
            "impl": impl,
            "model": model,
            "shape": shape,
            "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed",
        }
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--orig", type=Path, default=None, help="checkout of the original with the two stand-ins")
    p.add_argument("--trm", type=Path, default=None, help="checkout of TRM (SamsungSAILMontreal/TinyRecursiveModels)")
    p.add_argument("--models", nargs="+", default=["hrm"], choices=["hrm", "trm-mlp", "trm-attn"])
    p.add_argument("--shapes", nargs="+", default=["sudoku"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-compile", action="store_true")
    args, extra = p.parse_known_args()
    if args.no_compile:
        extra.append("--no-compile")

    rows = []
    for model in args.models:
        peer, checkout = ("orig", args.orig) if model == "hrm" else ("trm-orig", args.trm)
        for shape in args.shapes:
            if checkout is not None:
                rows.append(run(peer, shape, extra, checkout, model))
            rows.append(run("ours", shape, extra, None, model))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))

    cols = ["impl", "model", "shape", "batch", "ms_per_step", "steps_per_s", "mfu", "peak_mem_gb", "eval_puzzles_per_s"]
    print("| " + " | ".join(cols) + " | speed-up (train / eval) |")
    print("|" + "---|" * (len(cols) + 1))
    base: dict[str, dict] = {}
    for r in rows:
        key = f"{r.get('model', 'hrm')}/{r['shape']}"
        if "error" in r:
            print(f"| {r['impl']} | {r.get('model', 'hrm')} | {r['shape']} | error: {r['error']} |")
            continue
        if r["impl"] != "ours":
            base[key] = r
        ref = base.get(key)
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
