"""`python -m hrm export <checkpoint or run folder> <out folder> [--ema auto|true|false]`: write a model folder
(model.safetensors + config.json) that hrm.load reads and hrm/hub.py publishes."""

from __future__ import annotations

import argparse
import sys

import hrm
from utils.errors import UserError, exit_with


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hrm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write model.safetensors + config.json from a checkpoint or a run folder")
    ex.add_argument("source", help="a checkpoint file (<run folder>/step_N) or a run folder (its newest checkpoint)")
    ex.add_argument("out", help="the folder to write (new, or empty)")
    ex.add_argument(
        "--ema", default="auto", choices=["auto", "true", "false"], help="the weight average (auto: if kept)"
    )
    ex.add_argument("--data-path", help="the dataset it was trained on: only for checkpoints without step_N.json")
    args = parser.parse_args(argv)
    try:
        overrides = {"data_path": args.data_path} if args.data_path else None
        out = hrm.export(args.source, args.out, ema=args.ema, overrides=overrides)
        solver = hrm.load(out, device="cpu")
        info = solver.info
        print(f"exported {info['source']} of {args.source} ({info['weights']} weights, {solver.kind}) to {out}")
    except UserError as e:
        exit_with(e)


if __name__ == "__main__":
    main(sys.argv[1:])
