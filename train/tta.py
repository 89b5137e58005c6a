"""Test-time augmentation for Sudoku and Maze: solve K transformed copies of each test puzzle, map every
prediction back, and vote on whole grids.

The transforms are the builders' own (dataset/transforms.py, which training's `augment_online` also draws from).
Copy 0 is always the puzzle itself, so K=1 is the plain evaluation.

Vote: the grid predicted by the most copies wins; a tie goes to the grid whose copies have the higher mean
halting confidence sigmoid(q_halt) (as dataset/score_arc.py breaks ARC ties). With `prefer_valid` (Sudoku,
on by default), grids that are valid solutions agreeing with the givens are preferred over any others: a
solver can check that without knowing the answer. ARC has its own voting command (dataset/score_arc.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from dataset.bands import hard_band
from dataset.loader import load_arrays
from dataset.transforms import make_transforms, puzzle_kind
from utils.errors import UserError


def check_tta_kind(kind: str, k: int, key: str, arc_vote: str) -> None:
    """K > 1 copies need the transforms of Sudoku or Maze. `key`: the setting named in the refusal (evaluate.py's
    tta, training's eval_tta); `arc_vote`: the command(s) that vote over an ARC test set's own augmentations."""
    if k == 1:
        return
    if kind == "arc":
        raise UserError(
            f"{key} is for Sudoku and Maze, drop {key}={k}; ARC votes over the augmentations already in its test "
            f"set: {arc_vote}"
        )
    if kind not in ("sudoku", "maze"):
        raise UserError(f"{key} needs a Sudoku (seq 81, vocab 11) or Maze (seq 900, vocab 6) dataset, drop {key}={k}")
    if kind == "maze" and k > 8:
        raise UserError(f"a maze has 8 symmetries: {key} must be <= 8, got {k}")


# Host bytes a vote holds per test example, copy and position: the transformed inputs, the predictions and the
# predictions mapped back (int64 each), the per-copy comparisons beside them.
TTA_BYTES_PER_CELL = 8 * 3 + 2


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux's MemAvailable), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_tta_memory(examples: int, k: int, seq_len: int, key: str, available: int | None = None) -> None:
    """Refuse, before any work, a vote whose arrays would not fit in host memory (it would fail after the whole
    run or evaluation, taking the time spent with it). `available`: bytes (default: read from the machine)."""
    if k == 1:
        return
    need = examples * k * seq_len * TTA_BYTES_PER_CELL
    available = available_memory() if available is None else available
    if available is not None and need > 0.8 * available:
        fits = max(1, int(0.8 * available // max(1, examples * seq_len * TTA_BYTES_PER_CELL)))
        raise UserError(
            f"{key}={k} needs ~{need / 2**30:.1f} GiB of host memory for the vote over {examples:,} test puzzles, "
            f"and {available / 2**30:.1f} GiB is available: lower it to {key}={min(fits, 64)} or less"
        )


def vote(grids: np.ndarray, confidence: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(N, K, L) candidate grids, (N, K) confidences, optional (N, K) validity -> (N, L) chosen grids.

    `valid` ranks first: a bool (a valid solution beats any number of votes for an invalid one) or a score
    (higher first, dataset/verify.verifier_score: a shorter valid maze path before a longer one); then votes,
    then the mean confidence of the grid's candidates; a full tie goes to the grid that came first."""
    out = np.empty((grids.shape[0], grids.shape[2]), dtype=grids.dtype)
    for n in range(grids.shape[0]):
        keys: dict[bytes, list[int]] = {}
        for k in range(grids.shape[1]):
            keys.setdefault(grids[n, k].tobytes(), []).append(k)

        def rank(members: list[int], n: int = n) -> tuple[float, int, float]:
            ok = float(valid[n, members[0]]) if valid is not None else 0.0
            return ok, len(members), float(np.mean(confidence[n, members]))

        best = max(keys.values(), key=rank)
        out[n] = grids[n, best[0]]
    return out


def sudoku_valid(inputs: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """(N, L) puzzles and (N, K, L) candidate solutions (tokens) -> (N, K): a full valid grid keeping the givens
    (dataset/verify.py's check, the one home of the verifiers)."""
    from dataset.verify import verifier_score

    return np.isfinite(verifier_score("sudoku", inputs, grids))


def predict(model, eager, inputs: np.ndarray, puzzle_ids: np.ndarray, batch: int, steps: int, device) -> tuple:
    """Run `steps` ACT segments on every row (the paper's protocol); returns (argmax tokens, sigmoid(q_halt)).

    `model` is the CompileGuard (compiled where the run compiles), `eager` its eager module; the last batch is
    padded to `batch` rows so a compiled model sees one shape.
    """
    tokens, q_halt, _ = predict_segments(model, eager, inputs, puzzle_ids, batch, steps, device, every=False)
    return tokens[:, -1].astype(np.int64), 1 / (1 + np.exp(-q_halt[:, -1].astype(np.float64)))


def predict_segments(
    model,
    eager,
    inputs: np.ndarray,
    puzzle_ids: np.ndarray,
    batch: int,
    steps: int,
    device,
    every: bool = True,
    noise: float = 0.0,
    seed: tuple[int, ...] = (0,),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `steps` ACT segments on every row; returns (argmax tokens (N, S, L), uint8 for
    vocabularies up to 256, q_halt logits (N, S),
    the Q-head's halt decision (N, S)) for every segment (S = steps), or for the last only (S = 1, `every=False`).

    `noise` > 0: Gaussian noise of that standard deviation is added to the latent state at the start of every
    segment (models/act.py `perturb`; the states are RMS-normalised, ~1 per entry), drawn on the CPU from a
    generator seeded by `seed` and the batch's first row, so a run repeats with the same seed and batch size.
    """
    import torch

    from models.losses import EVAL_KEYS

    preds, q_halts, halts = [], [], []
    for start in range(0, len(inputs), batch):
        x = np.asarray(inputs[start : start + batch], dtype=np.int32)
        p = np.asarray(puzzle_ids[start : start + batch], dtype=np.int32)
        real = len(x)
        if real < batch:
            x = np.pad(x, ((0, batch - real), (0, 0)))
            p = np.pad(p, (0, batch - real))
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([*seed, start]).generate_state(1)[0]))

        def draw(state, gen=gen):
            return (torch.randn(state.shape, generator=gen) * noise).to(state.device, state.dtype)

        def segments(m, b):
            carry = eager.initial_carry(b)
            out_tokens, out_q, out_halt = [], [], []
            for i in range(steps):
                if noise > 0:
                    carry = eager.perturb(carry, b, draw)
                # train/steps.evaluate's list (default eval_save_outputs): the evaluation's compiled graph, not another
                carry, _, _, out, _ = m(carry=carry, batch=b, return_keys=EVAL_KEYS)
                if every or i == steps - 1:
                    small = out["logits"].shape[-1] <= 256  # every builder's vocabulary: one byte a cell
                    out_tokens.append(out["logits"].argmax(-1).to(torch.uint8 if small else torch.int32))
                    out_q.append(out["q_halt_logits"].float())
                    out_halt.append(eager.says_halt(out["q_halt_logits"], out["q_continue_logits"]))
            return torch.stack(out_tokens, 1), torch.stack(out_q, 1), torch.stack(out_halt, 1)

        # the batch is made inside inference mode, as train/steps.evaluate's: torch.compile guards on that too
        with torch.inference_mode():
            b = {
                "inputs": torch.from_numpy(x).to(device),
                "labels": torch.zeros_like(torch.from_numpy(x)).to(device),
                "puzzle_identifiers": torch.from_numpy(p).to(device),
            }
            tokens, q, halt = model.run("eval", lambda m, b=b: segments(m, b))
        preds.append(tokens[:real].cpu().numpy())
        q_halts.append(q[:real].cpu().numpy())
        halts.append(halt[:real].cpu().numpy())
    return np.concatenate(preds), np.concatenate(q_halts), np.concatenate(halts)


@dataclass
class HeldOut:
    """One test set as the offline evaluators (the vote here, train/search.py) read it: the first `rows` puzzles."""

    inputs: np.ndarray  # (N, L) int64
    labels: np.ndarray  # (N, L) int64
    puzzle_ids: np.ndarray  # (N,) the identifier of each example's puzzle
    hard: np.ndarray | None  # (N,) bool: the hard band's puzzles (dataset/bands.py); None where the data has none


def held_out_sets(data_path: str, meta, rows: int | None = None) -> dict[str, HeldOut]:
    """Every test set of `data_path` (`rows`: its first that many puzzles, training's eval_batches bound)."""
    arrays = load_arrays(data_path, "test", meta)
    band = hard_band(data_path, "test", meta, arrays)  # None: no band for this data
    return {
        name: HeldOut(
            inputs=np.asarray(a["inputs"][:rows], dtype=np.int64),
            labels=np.asarray(a["labels"][:rows], dtype=np.int64),
            puzzle_ids=np.repeat(a["puzzle_identifiers"], np.diff(a["puzzle_indices"]))[:rows],
            hard=band.hard[name][:rows] if band is not None else None,
        )
        for name, a in arrays.items()
    }


def evaluate_tta(
    model,
    eager,
    data_path: str,
    meta,
    k: int,
    batch: int,
    steps: int,
    device,
    prefer_valid: bool = True,
    seed: int = 0,
    rows: int | None = None,
) -> dict[str, dict[str, float]]:
    """Exact and token accuracy of the voted grids per test set, beside the same for copy 0 alone (K=1).
    `rows`: only the first that many puzzles of each set (training's eval_batches bound).

    Also, for the first j copies (j = 1, 2, 4, ..., K): exact accuracy of the vote (`k<j>/votes`), of the vote
    preferring valid Sudoku solutions (`k<j>/valid_first`), and the share with at least one right copy
    (`k<j>/any_copy`, the ceiling any vote could reach). Where the test split has a hard band (dataset/bands.py):
    the exact accuracy of one copy and of the vote on its puzzles (`hard_exact_accuracy`,
    `hard_tta_exact_accuracy`), as every plain evaluation reports it.
    """
    kind = puzzle_kind(meta.seq_len, meta.vocab_size, meta.num_puzzle_identifiers)
    tf = make_transforms(kind, k, meta.vocab_size, seed)
    results = {}
    for set_name, held in held_out_sets(data_path, meta, rows).items():
        inputs, labels, per_example, hard = held.inputs, held.labels, held.puzzle_ids, held.hard
        n = len(inputs)
        variants = tf.apply(inputs).reshape(n * k, -1)
        preds, conf = predict(model, eager, variants, np.repeat(per_example, k), batch, steps, device)
        back = tf.undo(preds.reshape(n, k, -1).astype(np.int64))
        conf = conf.reshape(n, k)
        valid = sudoku_valid(inputs, back) if kind == "sudoku" else None
        mask = labels != (meta.ignore_label_id if meta.ignore_label_id is not None else -1)

        score = partial(grid_scores, labels=labels, mask=mask)
        # the first j copies of these K are themselves a TTA run with j copies: one table per rule from one pass
        exact = ((back == labels[:, None]) | ~mask[:, None]).all(-1)  # (N, K): copy k is right
        table: dict[str, float] = {}
        for j in prefix_sizes(k):  # ends with j = K, whose chosen grids are the headline's
            by_votes = vote(back[:, :j], conf[:, :j])
            table[f"k{j}/votes"] = score(by_votes)[0]
            chosen = by_votes
            if valid is not None:
                by_valid = vote(back[:, :j], conf[:, :j], valid[:, :j])
                table[f"k{j}/valid_first"] = score(by_valid)[0]
                chosen = by_valid if prefer_valid else by_votes
            table[f"k{j}/any_copy"] = float(exact[:, :j].any(1).mean())
        row = dict(zip(("exact_accuracy", "accuracy"), score(back[:, 0])))
        row |= dict(zip(("tta_exact_accuracy", "tta_accuracy"), score(chosen)))
        if hard is not None and hard.any():
            right = ((chosen == labels) | ~mask).all(-1)
            row |= {
                "hard_exact_accuracy": float(exact[hard, 0].mean()),
                "hard_tta_exact_accuracy": float(right[hard].mean()),
            }
        results[set_name] = row | table
    return results


def grid_scores(grid: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(N, L) chosen grids -> (exact, token) accuracy over the labelled cells."""
    right = (grid == labels) & mask
    return float((right.sum(1) == mask.sum(1)).mean()), float((right.sum(1) / np.maximum(mask.sum(1), 1)).mean())


def prefix_sizes(k: int) -> list[int]:
    """1, 2, 4, ... below K, then K: the copy counts evaluate.py's table reports from one tta=K run."""
    return [j for j in (2**i for i in range(k.bit_length())) if j < k] + [k]
