"""Search beyond symmetric copies (evaluate.py `search=K`): many candidate answers per test puzzle, a verifier to
choose among them, and accuracy against the forward passes spent.

A *pass* runs all `halt_max_steps` ACT segments on one version of a puzzle, the cost of one plain evaluation.
`search=K` runs K passes; every segment of every pass is a candidate (K x halt_max_steps candidates, each with
its Q-halt logit). The passes, in order (`search_plan`):

- without `search_noise`: pass p is symmetric copy p (train/tta.py's transforms; copy 0 is the puzzle itself,
  so pass 0 is the plain evaluation). A maze has 8 symmetries: K <= 8.
- with `search_noise=s`: passes come in pairs, copy j clean then copy j again with Gaussian noise of standard
  deviation s added to the latent carry (HRM z_H/z_L, TRM y/z) at the start of every segment (pass 0: the
  puzzle itself; pass 1: the puzzle itself with noise; pass 2: copy 1; ...). Past a maze's 8 copies every pass
  is a noisy one (a clean repeat would repeat its answers). The noise is seeded by (`search_seed`, pass, batch).

Selection (`select`): the task's verifier first (dataset/verify.verifier_score: a valid Sudoku completion of
the givens; a valid S-G maze path, the shortest valid one first), then the most votes among the candidates
left (identical grids), then the higher mean sigmoid(q_halt), then the earlier candidate. A valid candidate,
when there is one, is always chosen.

The table (`evaluate_search`) scores the first j passes for j = 1, 2, 4, ..., K (prefixes: the first j passes
of a K-pass run are exactly a j-pass run): paper protocol and at halt (pass 0 alone, as the plain evaluation),
vote (the last segment of each of the j passes, votes then confidence: test-time augmentation's vote without
the verifier), search (every candidate of the j passes, verifier first), and the share of puzzles with a right
candidate (the ceiling of any selection). For Sudoku a valid completion is the label (one solution), so the
search column is the share of puzzles with a valid candidate and never falls as j grows; for Maze another
shortest path is valid but not the label, so it may.
"""

from __future__ import annotations

import csv
import json
import os
import time
from typing import Any

import numpy as np

from dataset.transforms import Transforms, make_transforms, puzzle_kind
from dataset.verify import verifier_score
from train.tta import available_memory, held_out_sets, predict_segments, prefix_sizes, vote
from utils.errors import UserError

SEARCH_MAX = 64
MAZE_COPIES = 8


def search_plan(kind: str, k: int, noise: float) -> list[tuple[int, bool]]:
    """(copy index, noisy) of each of the K passes, in order."""
    copies = MAZE_COPIES if kind == "maze" else k
    if noise <= 0:
        return [(p, False) for p in range(k)]
    return [((p // 2) % copies, p % 2 == 1 or p // 2 >= copies) for p in range(k)]


def check_search(kind: str, k: int, noise: float, arc_vote: str) -> None:
    """The refusals of evaluate.py's search keys that need the dataset's kind (the keys' own ranges: evaluate.py)."""
    if kind == "arc":
        raise UserError(
            f"search is for Sudoku and Maze (it needs their symmetries and verifiers), drop search={k}; ARC votes over "
            f"the augmentations already in its test set: {arc_vote}"
        )
    if kind not in ("sudoku", "maze"):
        raise UserError(f"search needs a Sudoku (seq 81, vocab 11) or Maze (seq 900, vocab 6) dataset, drop search={k}")
    if kind == "maze" and noise <= 0 and k > MAZE_COPIES:
        raise UserError(
            f"a maze has 8 symmetries: search must be <= 8 without noise, got {k}; add search_noise=0.1 for noisy "
            "passes beyond them"
        )


def check_search_memory(examples: int, k: int, steps: int, seq_len: int, available: int | None = None) -> None:
    """Refuse, before any work, candidates that would not fit in host memory (one byte a cell, plus the scores)."""
    need = examples * k * steps * (seq_len + 32)
    available = available_memory() if available is None else available
    if available is not None and need > 0.8 * available:
        fits = max(1, int(0.8 * available // max(1, examples * steps * (seq_len + 32))))
        raise UserError(
            f"search={k} keeps ~{need / 2**30:.1f} GiB of candidates for {examples:,} test puzzles x {steps} segments, "
            f"and {available / 2**30:.1f} GiB is available: lower it to search={min(fits, SEARCH_MAX)} or less"
        )


def select(grids: np.ndarray, q_halt: np.ndarray, score: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, L) candidates, their (N, C) Q-halt logits and verifier scores (dataset/verify.verifier_score; None:
    votes only) -> the (N, L) chosen grids and whether each is verified (valid). Verifier first, then votes,
    then mean sigmoid(q_halt), then the earlier candidate: train/tta.vote."""
    confidence = 1 / (1 + np.exp(-q_halt.astype(np.float64)))
    chosen = vote(grids, confidence, score)
    if score is None:
        return chosen, np.zeros(len(grids), dtype=bool)
    return chosen, np.isfinite(score.max(axis=1))  # the chosen grid's score is the best one


def evaluate_search(
    model,
    eager,
    data_path: str,
    meta,
    k: int,
    batch: int,
    steps: int,
    device,
    noise: float = 0.0,
    seed: int = 0,
    rows: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Per test set: {"puzzles", "hard" (hard-band puzzles, 0 without a band), "plan" ((copy, noisy) per pass),
    "rows": one dict per prefix j of the table (module docstring)}."""
    import torch

    kind = puzzle_kind(meta.seq_len, meta.vocab_size, meta.num_puzzle_identifiers)
    plan = search_plan(kind, k, noise)
    tf = make_transforms(kind, max(c for c, _ in plan) + 1, meta.vocab_size, seed)
    ignore = meta.ignore_label_id if meta.ignore_label_id is not None else -1
    results: dict[str, dict[str, Any]] = {}
    for set_name, held in held_out_sets(data_path, meta, rows).items():
        inputs, labels, ids, hard = held.inputs, held.labels, held.puzzle_ids, held.hard
        n = len(inputs)
        variants = tf.apply(inputs)  # (N, copies, L)
        grids = np.empty((n, k * steps, meta.seq_len), dtype=np.uint8)
        q_halt = np.empty((n, k * steps), dtype=np.float32)
        score = np.empty((n, k * steps), dtype=np.float64)
        seconds = []
        for p, (c, noisy) in enumerate(plan):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            tokens, q, halts = predict_segments(
                model, eager, variants[:, c], ids, batch, steps, device, noise=noise if noisy else 0.0, seed=(seed, p)
            )
            back = one_copy(tf, c).undo(tokens.astype(np.int64))  # (N, steps, L) in the puzzle's own frame
            cols = slice(p * steps, (p + 1) * steps)
            grids[:, cols], q_halt[:, cols] = back, q
            score[:, cols] = verifier_score(kind, inputs, back)
            seconds.append(time.perf_counter() - began)  # the pass and its verifier checks
            if p == 0:
                first_halt = np.where(halts.any(1), halts.argmax(1), steps - 1)
                at_halt = back[np.arange(n), first_halt]
        right = ((grids == labels[:, None]) | (labels[:, None] == ignore)).all(-1)  # (N, K*steps)
        table = []
        for j in prefix_sizes(k):
            began = time.perf_counter()
            last = slice(steps - 1, j * steps, steps)  # each pass's final segment
            by_vote, _ = select(grids[:, last], q_halt[:, last], None)
            by_search, verified = select(grids[:, : j * steps], q_halt[:, : j * steps], score[:, : j * steps])
            took = sum(seconds[:j]) + time.perf_counter() - began
            exact = {
                "paper": right[:, steps - 1],
                "at_halt": is_right(at_halt, labels, ignore),
                "vote": is_right(by_vote, labels, ignore),
                "search": is_right(by_search, labels, ignore),
                "any_right": right[:, : j * steps].any(1),
            }
            row: dict[str, Any] = {
                "passes": j,
                "candidates": j * steps,
                "noisy_passes": sum(noisy for _, noisy in plan[:j]),
                **{name: float(v.mean()) for name, v in exact.items()},
                "verified": float(verified.mean()),
                "puzzles_per_s": n / max(took, 1e-9),
            }
            if hard is not None and hard.any():
                row |= {f"hard_{name}": float(v[hard].mean()) for name, v in exact.items()}
            table.append(row)
        results[set_name] = {
            "puzzles": n,
            "hard": int(hard.sum()) if hard is not None else 0,
            "plan": plan,
            "rows": table,
        }
    return results


def one_copy(tf: Transforms, c: int) -> Transforms:
    """Transform c alone: its undo maps (N, S, L) answers of that copy back (S segments broadcast as copies)."""
    return Transforms(src=tf.src[c : c + 1], table=tf.table[c : c + 1], inverse_table=tf.inverse_table[c : c + 1])


def is_right(grid: np.ndarray, labels: np.ndarray, ignore: int) -> np.ndarray:
    return ((grid == labels) | (labels == ignore)).all(-1)


COLUMNS = ("paper", "at_halt", "vote", "search", "any_right")
TITLES = {
    "paper": "paper protocol",
    "at_halt": "at halt",
    "vote": "vote",
    "search": "search",
    "any_right": "any right",
}


def table_lines(result: dict[str, Any]) -> list[str]:
    """The table as evaluate.py prints it: one row per prefix, the hard band's columns beside where there is one."""
    hard = result["hard"] > 0
    head = f"  {'passes':>6} {'candidates':>10} " + " ".join(f"{TITLES[c]:>14}" for c in COLUMNS)
    head += f" {'verified':>8} {'puzzles/s':>10}"
    if hard:
        head += " " + " ".join(f"{'hard ' + TITLES[c]:>19}" for c in COLUMNS)
    lines = [head]
    for r in result["rows"]:
        line = f"  {r['passes']:>6} {r['candidates']:>10} " + " ".join(f"{r[c]:>14.4f}" for c in COLUMNS)
        line += f" {r['verified']:>8.4f} {r['puzzles_per_s']:>10.1f}"
        if hard:
            line += " " + " ".join(f"{r['hard_' + c]:>19.4f}" for c in COLUMNS)
        lines.append(line)
    return lines


def write_outputs(results: dict[str, dict[str, Any]], out_dir: str, stem: str, settings: dict[str, Any]) -> list[str]:
    """<stem>.csv (one row per set and prefix), <stem>.json (settings and every set's table) and <stem>.png
    (exact accuracy against passes), in out_dir. Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{stem}.{ext}") for ext in ("csv", "json", "png")]
    fields = ["set", "passes", "candidates", "noisy_passes", *COLUMNS, "verified", "puzzles_per_s"]
    fields += [f"hard_{c}" for c in COLUMNS]
    with open(paths[0], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        for set_name, res in results.items():
            for r in res["rows"]:
                w.writerow({"set": set_name, **r})
    with open(paths[1], "w") as f:
        json.dump({"settings": settings, "sets": results}, f, indent=1)
    noise = settings.get("search_noise") or 0
    plot(results, paths[2], f"search={settings.get('search')}" + (f", search_noise={noise:g}" if noise else ""))
    return paths


def plot(results: dict[str, dict[str, Any]], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        res = results[set_name]
        x = [r["passes"] for r in res["rows"]]
        for col, style in (("any_right", ":"), ("search", "o-"), ("vote", "s--"), ("paper", "-"), ("at_halt", "-.")):
            width = 4 if col == "any_right" else 1.5  # drawn first and wide: visible where search reaches it
            ax.plot(x, [r[col] for r in res["rows"]], style, lw=width, label=TITLES[col])
            if res["hard"]:
                ax.plot(x, [r["hard_" + col] for r in res["rows"]], style, alpha=0.4, label=f"hard: {TITLES[col]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_xlabel("forward passes per puzzle (each: all ACT segments)")
        ax.set_ylabel("exact accuracy")
        ax.set_title(
            f"{title}; {set_name}: {res['puzzles']} puzzles" + (f", {res['hard']} hard" if res["hard"] else "")
        )
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
