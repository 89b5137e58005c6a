"""Peak GPU memory and ms/step of this fork across batch sizes, eager and compiled (TROUBLESHOOTING.md table).

python bench/memory.py [--batches 96 192 384 768] [--arc-batches 96]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, nargs="+", default=[96, 192, 384, 768])
    p.add_argument("--arc-batches", type=int, nargs="+", default=[96])
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    rows = []
    runs = [("sudoku", b) for b in args.batches] + [("arc", b) for b in args.arc_batches]
    for compiled in (False, True):
        for shape, batch in runs:
            cmd = [
                sys.executable,
                str(HERE / "bench.py"),
                "--shape",
                shape,
                "--batch",
                str(batch),
                "--eval-batches",
                "0",
            ]
            cmd += ["--warmup", "6" if compiled else "2", "--steps", str(args.steps), "--peak-tflops", "790"]
            if not compiled:
                cmd.append("--no-compile")
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
                rows.append(dict(shape=shape, batch=batch, compile=compiled, error=err[:120]))
            else:
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| shape | batch | mode | ms/step | peak GB | MFU |\n|---|---|---|---|---|---|")
    for r in rows:
        mode = "compiled" if r["compile"] else "eager"
        if "error" in r:
            print(f"| {r['shape']} | {r['batch']} | {mode} | error: {r['error']} | | |")
        else:
            print(f"| {r['shape']} | {r['batch']} | {mode} | {r['ms_per_step']} | {r['peak_mem_gb']} | {r['mfu']} |")


if __name__ == "__main__":
    main()
