"""The command line of dataset/view.py (its docstring says what is drawn): arguments, where the page goes, and the
steps from reading the data to writing the files."""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile

from dataset.viewer.data import Preds, load_pred_file, match_preds, open_dataset, pred_files
from dataset.viewer.page import render_html
from dataset.viewer.panels import build_example, summary_line
from dataset.viewer.png import render_png
from dataset.viewer.style import KIND_TITLES
from utils.errors import UserError, exit_with

MAX_N = 200  # one page; beyond this a PNG grows past what matplotlib renders in reasonable time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Draw a dataset's puzzles (and a model's predictions) into a PNG or a self-contained HTML page.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", metavar="DATA_DIR", help="dataset folder (holding train/ and test/)")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--n", type=int, default=12, help=f"how many examples (1 to {MAX_N})")
    p.add_argument("--start", type=int, default=0, help="index of the first example shown")
    p.add_argument(
        "--preds",
        nargs="+",
        default=None,
        metavar="FILE",
        help="evaluate.py's step_<N>_all_preds.<rank> file(s), or their folder (latest step): adds the predictions",
    )
    p.add_argument("--png", default=None, metavar="PATH", help="write a PNG figure")
    p.add_argument(
        "--html",
        default=None,
        metavar="PATH",
        help="write one HTML page [neither given: <data>/view-<split>-<start>.html]",
    )
    return p.parse_args(argv)


def default_html(data_dir: str, split: str, start: int) -> str:
    """Where the page goes when no output is named: beside the data it shows (datasets live under the git-ignored
    data/), or the temporary folder for a read-only dataset; not the working directory, a checkout for most users."""
    folder = data_dir if os.access(data_dir, os.W_OK) else os.path.join(tempfile.gettempdir(), "hrm-view")
    os.makedirs(folder, exist_ok=True)
    name = f"view-{split}-{start}.html"
    if folder != data_dir:  # the shared folder holds pages of several datasets
        name = f"{os.path.basename(os.path.normpath(data_dir))}-{name}"
    return os.path.join(folder, name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not 1 <= args.n <= MAX_N:
            raise UserError(f"--n {args.n}: show 1 to {MAX_N} examples at a time (page on with --start)")
        if args.start < 0:
            raise UserError(f"--start {args.start}: must be 0 or more")
        if args.preds and args.split != "test":
            raise UserError("--preds: evaluate.py predicts the test split; leave out --split train")
        data = open_dataset(args.data, args.split)
        if data.total == 0:
            raise UserError(f"{os.path.join(args.data, args.split)} holds no examples")
        if args.start >= data.total:
            raise UserError(
                f"--start {args.start}: the {args.split} split has {data.total} examples (0 to {data.total - 1})"
            )
        shown = list(range(args.start, min(data.total, args.start + args.n)))
        preds = None
        if args.preds:
            files = pred_files(args.preds)
            preds = Preds(files, [load_pred_file(f) for f in files])
            match_preds(preds, data, shown)
        examples = [build_example(data, i, preds) for i in shown]

        name = os.path.basename(os.path.normpath(args.data))
        header = [  # plain text lines: title, dataset, then predictions and their summary
            f"{name}: {KIND_TITLES[data.kind.name]}, {args.split} examples {shown[0]}-{shown[-1]} of {data.total}",
            f"{os.path.abspath(args.data)} ({args.split}, seq {data.meta.seq_len}, vocab {data.meta.vocab_size})",
        ]
        if preds is not None:
            which = ", ".join(os.path.basename(f) for f in preds.files[:3]) + (", ..." if len(preds.files) > 3 else "")
            header.append(f"predictions: {which} ({os.path.dirname(os.path.abspath(preds.files[0]))})")
            header.append(summary_line(examples))
        next_page = ""
        if shown[-1] + 1 < data.total:
            cmd = ["python", "dataset/view.py", args.data, "--split", args.split, "--n", str(args.n)]
            cmd += ["--start", str(shown[-1] + 1)] + (["--preds", *args.preds] if args.preds else [])
            next_page = shlex.join(cmd)
        html_out = args.html or (None if args.png else default_html(args.data, args.split, args.start))
        if html_out:
            page = render_html(examples, data, header, next_page)
            try:
                with open(html_out, "w", encoding="utf-8") as f:
                    f.write(page)
            except OSError as e:
                raise UserError(f"cannot write {html_out}: {e.strerror or e}") from None
            print(f"wrote {shlex.quote(html_out)} ({len(examples)} examples; open it in a browser, no network needed)")
        if args.png:
            w, h = render_png(examples, data, header, args.png)
            print(f"wrote {args.png} ({w}x{h} px, {len(examples)} examples)")
        if preds is not None:
            print(summary_line(examples))
    except UserError as e:
        exit_with(e)
    return 0
