"""The Python API: load a trained model from a checkpoint, a run folder or an exported model folder, solve puzzles
in batches, and export a model folder (model.safetensors + config.json) to share.

    solver = hrm.load("checkpoints/<project>/<run>")        # the newest checkpoint of a run
    result = solver.solve(["4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"])
    result.grids[0], result.steps[0], result.confidence[0], result.valid[0]

predict.py is this API's command line; evaluate.py scores whole datasets with the same checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from hrm.puzzles import show, to_digits, to_tokens
from train.checkpoint import (
    EXPORTED_INFO,
    EXPORTED_WEIGHTS,
    INFO_FORMAT,
    check_model_info,
    model_info,
    read_model_info,
    write_model_info,
)
from utils.errors import UserError

# the folder layouts (an exported model; the original's released checkpoints): train/checkpoint.py's
MODEL_FILE, CONFIG_FILE = EXPORTED_WEIGHTS, EXPORTED_INFO
HALT_RULES = ("q", "max")


@dataclass
class Result:
    """What solve() found, one entry per puzzle, in the order given. Grids hold digits (hrm/puzzles.py): Sudoku
    0 (blank) to 9, Maze the index of each cell's character in `# SGo`."""

    kind: str  # "sudoku" or "maze"
    puzzles: np.ndarray  # (N, H, W) the puzzles as given
    grids: np.ndarray  # (N, H, W) the answers: the prediction at the segment where each puzzle halted
    steps: np.ndarray  # (N,) that segment, 1-based
    confidence: np.ndarray  # (N,) sigmoid of the Q-head's halt logit there: how sure the model is it is done
    segments: list[np.ndarray]  # per puzzle (steps[i], H, W): the prediction after every segment up to its answer
    valid: np.ndarray | None  # (N,) Sudoku: a valid grid keeping the givens; Maze: one simple S-G path of `o`
    segment_confidence: list[np.ndarray] | None = None  # per puzzle (steps[i],): sigmoid(q_halt) after each segment
    q_halt_segment: np.ndarray | None = None  # (N,) first segment run where the Q head says halt (says_halt), 0: none

    def __len__(self) -> int:
        return len(self.grids)

    def text(self, i: int = 0) -> str:
        """Puzzle i's answer drawn as predict.py prints it."""
        return show(self.grids[i].reshape(-1).astype(np.int64) + 1, self.kind)


class Solver:
    """A trained model ready to solve puzzles (hrm.load makes one). `info` is the checkpoint's model_info
    (train/checkpoint.py): kind, grid, vocabulary, sequence length, config."""

    def __init__(self, model: Any, info: dict[str, Any], device: torch.device, weights: str) -> None:
        self.model = model  # the ACT loss head around HRM/TRM, in eval mode
        self.info = info
        self.kind: str = info["kind"]
        self.device = device
        self.weights = weights  # the file the weights came from (step_N, step_N.ema, model.safetensors)
        self.halt_max_steps: int = int(model.halt_max_steps)

    def __repr__(self) -> str:
        return f"Solver({self.kind}, {self.info['config']['arch']['name']}, {self.weights}, {self.device})"

    def encode(self, puzzles: Any) -> np.ndarray:
        """Puzzles (text, list of texts, digits) -> tokens (N, seq_len), as solve() reads them."""
        return to_tokens(puzzles, self.kind, self.info["seq_len"], self.info["vocab_size"])

    def solve(self, puzzles: Any, max_steps: int | None = None, halt: str = "max", batch_size: int = 256) -> Result:
        """Solve puzzles: one text, a list of texts, or digits (an array or tensor (N, 81) / (N, 9, 9) for Sudoku).

        Every puzzle runs ACT segments until `halt`: "max" runs `max_steps` of them (default: the model's
        halt_max_steps, as evaluate.py does: the paper's protocol); "q" stops a puzzle where the Q-head says halt
        (as in training), at the latest after max_steps. Puzzles go through the model `batch_size` at a time and
        do not affect one another."""
        if halt not in HALT_RULES:
            raise UserError(f"halt must be q (stop when the Q head says so) or max (run max_steps), got {halt!r}")
        steps_cap = self.halt_max_steps if max_steps is None else max_steps
        if isinstance(steps_cap, bool) or not isinstance(steps_cap, (int, np.integer)) or steps_cap < 1:
            raise UserError(f"max_steps={max_steps!r} must be a whole number >= 1")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size={batch_size!r} must be a whole number >= 1")
        tokens = self.encode(puzzles)
        answers, steps, confidence, segments, seg_conf, q_stop = [], [], [], [], [], []
        for start in range(0, len(tokens), batch_size):
            a, s, c, seg, sc, qs = self._run(tokens[start : start + batch_size], int(steps_cap), halt)
            answers.append(a)
            steps.append(s)
            confidence.append(c)
            segments.extend(seg[i, : s[i]] for i in range(len(s)))
            seg_conf.extend(sc[i, : s[i]] for i in range(len(s)))
            q_stop.append(qs)
        answer = np.concatenate(answers)
        return Result(
            kind=self.kind,
            puzzles=to_digits(tokens, self.kind),
            grids=to_digits(answer, self.kind),
            steps=np.concatenate(steps),
            confidence=np.concatenate(confidence),
            segments=[to_digits(s, self.kind) for s in segments],
            valid=valid_answers(self.kind, tokens, answer),
            segment_confidence=seg_conf,
            q_halt_segment=np.concatenate(q_stop),
        )

    @torch.inference_mode()
    def _run(self, tokens: np.ndarray, max_steps: int, halt: str) -> tuple[np.ndarray, ...]:
        """One batch through the inner model, segment by segment, as the ACT wrapper would run it; returns (answer
        tokens (n, L), halting segment (n,), confidence (n,), the predictions of every segment run (n, S, L), the
        confidence of every segment (n, S), the first segment where says_halt holds (n,), 0 where it never does)."""
        n = len(tokens)
        inner = self.model.model.inner
        batch = {
            "inputs": torch.from_numpy(tokens).to(torch.int32).to(self.device),
            "puzzle_identifiers": torch.zeros(n, dtype=torch.int32, device=self.device),
        }
        carry = inner.reset_carry(
            torch.ones(n, dtype=torch.bool, device=self.device), inner.empty_carry(n, device=self.device)
        )
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        steps = torch.zeros(n, dtype=torch.int64, device=self.device)
        confidence = torch.zeros(n, dtype=torch.float32, device=self.device)
        preds, confs = [], []
        q_stop = torch.zeros(n, dtype=torch.int64, device=self.device)
        for segment in range(1, max_steps + 1):
            carry, logits, (q_halt, q_continue) = inner(carry, batch)
            preds.append(logits.argmax(-1))
            confs.append(torch.sigmoid(q_halt.float()))
            says = self.model.says_halt(q_halt, q_continue)
            q_stop = torch.where((q_stop == 0) & says, segment, q_stop)
            running = ~done  # a puzzle's answer and confidence are those of the segment where it stops
            steps = torch.where(running, segment, steps)
            confidence = torch.where(running, torch.sigmoid(q_halt.float()), confidence)
            if halt == "q":  # the model's own rule (no_ACT_continue too), looked up per call as the trainer does
                done |= says
                if bool(done.all()):
                    break
        seg = torch.stack(preds, dim=1)  # (n, S, L)
        answer = seg.gather(1, (steps - 1).view(n, 1, 1).expand(n, 1, seg.shape[-1])).squeeze(1)
        return tuple(t.cpu().numpy() for t in (answer, steps, confidence, seg, torch.stack(confs, 1), q_stop))


def valid_answers(kind: str, tokens: np.ndarray, answers: np.ndarray) -> np.ndarray | None:
    """Per puzzle, whether the answer is a valid one whatever a label says (dataset/verify.py)."""
    from dataset.verify import maze_check, sudoku_valid

    if kind == "sudoku":
        return sudoku_valid(tokens, answers)
    if kind == "maze":
        return maze_check(tokens, answers)[0]
    return None


# ----------------------------------------------------------------------------------------------------------
# Loading


def _quiet(*_: Any, **__: Any) -> None:
    pass


def load(
    source: str | os.PathLike[str],
    device: str | torch.device | None = None,
    *,
    ema: str = "auto",
    overrides: dict[str, Any] | None = None,
    log: Callable[..., None] = _quiet,
) -> Solver:
    """A Solver from `source`: a checkpoint file (`<run>/step_N`), a run folder (its newest checkpoint), a folder
    hrm.export wrote, or `hf://org/name[@revision]` (hrm/hub.py downloads that folder). `device`: None picks the
    GPU when there is one ("cpu", "cuda", "cuda:1", a torch.device). `ema`: auto takes a run's weight average
    when it kept one (true insists, false takes the raw weights). `overrides`: config keys as evaluate.py takes
    them (`{"data_path": ...}` for checkpoints without metadata, the original's; `{"arch": {"halt_max_steps": 32}}`)."""
    from train.weights import model_source, step_files

    src = model_source(os.fspath(source))  # hf:// downloaded; an exported or released folder: its weights file
    cli = dict(overrides or {})
    target = _device(device, cli)
    # an exported folder (model_source named its weights), or a folder with only config.json: its checks say what
    # is wrong with it
    folder = os.path.dirname(src) if os.path.basename(src) == MODEL_FILE else src
    if os.path.isdir(folder) and os.path.isfile(os.path.join(folder, CONFIG_FILE)):
        return _load_exported(folder, cli, target, log)
    if os.path.isdir(src):
        found = step_files(src)
        if not found:
            raise UserError(
                f"{src} holds no checkpoint (no step_N files) and no exported model ({CONFIG_FILE}); give "
                "a checkpoint file <run folder>/step_N, a run folder or a folder hrm.export wrote"
            )
        src = os.path.join(src, found[0])
    elif not os.path.exists(src):
        near = step_files(os.path.dirname(src) or ".")
        there = f" (step files beside it: {', '.join(near[:5])})" if near else ""
        raise UserError(
            f"{src!r} does not exist{there}: give a checkpoint file (<run folder>/step_N), a run folder, "
            "a folder hrm.export wrote, or hf://org/name"
        )
    return _load_checkpoint(src, cli, target, ema, log)


def _device(device: str | torch.device | None, cli: dict[str, Any]) -> torch.device | None:
    """Sets the config's `device` (auto, cuda, cpu, mps) and returns the exact device asked for, if any."""
    if device is None:
        cli.setdefault("device", "auto")
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device={device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    cli["device"] = dev.type
    return dev if dev.index is not None else None


def _load_checkpoint(ckpt: str, cli: dict[str, Any], target: torch.device | None, ema: str, log: Callable) -> Solver:
    from train.eval_config import load_eval_config
    from train.weights import model_shape, weights_file

    cli = {**cli, "checkpoint": ckpt, "save_outputs": []}  # no prediction files: a read-only run folder is fine
    config, ckpt, _ = load_eval_config(cli, log=log)
    meta, note = model_shape(ckpt, config.data_path)
    if note:
        log(note)
    info = read_model_info(ckpt) or model_info(config.model_dump(), {"train": meta.model_dump()})
    return _build(config, meta, weights_file(ckpt, ema), info, target)


def _load_exported(folder: str, cli: dict[str, Any], target: torch.device | None, log: Callable) -> Solver:
    from dataset.format import PuzzleDatasetMetadata
    from train.config import PretrainConfig, config_error

    path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(path) as f:
            info = check_model_info(json.load(f), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); export the model again") from None
    weights = os.path.join(folder, MODEL_FILE)
    if not os.path.isfile(weights):
        raise UserError(f"{folder} has {CONFIG_FILE} but no {MODEL_FILE}; export the model again")
    merged = OmegaConf.merge(OmegaConf.create(info["config"]), OmegaConf.create(cli))
    try:
        config = PretrainConfig(**OmegaConf.to_container(merged, resolve=True))  # type: ignore[arg-type]
    except Exception as e:
        raise config_error(e) from None
    log(f"config: {path}")
    return _build(config, PuzzleDatasetMetadata(**info["dataset"]), weights, info, target)


def _build(config: Any, meta: Any, weights: str, info: dict[str, Any], target: torch.device | None) -> Solver:
    from train.runtime import Dist, setup_runtime
    from train.steps import create_model
    from train.weights import load_checkpoint

    d = Dist()
    rt = setup_runtime(config, d)
    model, _, _ = create_model(config, meta, d, rt.device, rt.forward_dtype, use_compile=False, log=_quiet)
    load_checkpoint(weights, model.eager, config.data_path)
    head = model.eager.to(target) if target is not None else model.eager
    head.eval()
    return Solver(head, info, target or rt.device, weights)


# ----------------------------------------------------------------------------------------------------------
# Export


def export(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    ema: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> str:
    """Write a model folder from a checkpoint file or a run folder (its newest checkpoint): `model.safetensors`
    (the weight average when the run kept one and ema is auto/true, else the raw weights; the original's key
    names) and `config.json` (the run's config and the inference metadata), nothing else. hrm.load reads it.
    Returns the folder. An existing folder is written into only if it holds nothing else. `overrides` as for
    load: a checkpoint without metadata (the original's) needs `{"data_path": <its dataset>}` once, here."""
    from safetensors.torch import save_file

    from train.checkpoint import verify_weights
    from train.weights import read_weights

    src = os.fspath(source)
    out = os.fspath(out_dir)
    solver = load(src, device="cpu", ema=ema, overrides=overrides)  # the same checks as loading: the result loads
    info = dict(solver.info)
    if os.path.isdir(out) and set(os.listdir(out)) - {MODEL_FILE, CONFIG_FILE}:
        raise UserError(f"{out} is not empty: export into a new folder (it writes {MODEL_FILE} and {CONFIG_FILE})")
    ckpt = solver.weights
    state = read_weights(ckpt)
    try:
        verify_weights(ckpt, state)
    except ValueError as e:
        raise UserError(str(e)) from None
    # keys as the model's (the original's names; a compiled run's `_orig_mod.` dropped), each tensor its own copy
    tensors = {str(k).removeprefix("_orig_mod."): v.detach().contiguous().clone() for k, v in state.items()}
    info["format"] = INFO_FORMAT
    info["weights"] = "ema" if ckpt.endswith(".ema") else "raw"
    info["source"] = os.path.basename(ckpt)
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{MODEL_FILE}.tmp-{os.getpid()}")
    save_file(tensors, tmp, metadata={"format": INFO_FORMAT})
    os.replace(tmp, os.path.join(out, MODEL_FILE))
    write_model_info(os.path.join(out, CONFIG_FILE), info)
    return out


__all__ = ["Result", "Solver", "export", "load"]
