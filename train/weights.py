"""Weights for evaluate.py, predict.py and the hrm API: which file `checkpoint=` and `ema=` name, what shapes the
model (the checkpoint's own metadata, else the dataset folder), and loading the original's step_N files, ours or
an exported model.safetensors into a model, with one line naming what differs (dataset build, arch.* sizes)."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

import torch

from dataset.format import PuzzleDatasetMetadata
from train.checkpoint import (
    EMA_SUFFIX,
    EXPORTED_WEIGHTS,
    RELEASED_WEIGHTS,
    STATE_SUFFIX,
    read_model_info,
    verify_weights,
)
from train.hub import is_hub_id, resolve
from utils.errors import UserError, load_tensors


def weights_file(ckpt: str, ema: Any) -> str:
    """Which file to evaluate: `ema=auto` (default) takes the weight average `step_N.ema` when the run kept one
    (ema=true), `ema=true` insists on it, `ema=false` takes the raw weights."""
    choice = str(ema).lower()
    if choice not in ("auto", "true", "false"):
        raise UserError(f"ema must be auto, true or false, got {ema!r}")
    averaged = ckpt + EMA_SUFFIX
    if choice == "false" or (choice == "auto" and not os.path.isfile(averaged)):
        return ckpt
    if not os.path.isfile(averaged):
        raise UserError(
            f"{ckpt} has no weight average ({os.path.basename(averaged)} is missing: trained without ema=true); "
            "use ema=false (or ema=auto) to evaluate its weights"
        )
    return averaged


def step_files(folder: str) -> list[str]:
    """The step_N weight files in a folder, newest step first."""
    if not os.path.isdir(folder):
        return []
    found = [n for n in os.listdir(folder) if re.fullmatch(r"step_\d+", n) and os.path.isfile(os.path.join(folder, n))]
    return sorted(found, key=lambda n: -int(n.removeprefix("step_")))


def model_source(source: str) -> str:
    """What `checkpoint=` names, as a path the rest reads: `hf://org/name[@revision]` is downloaded through the Hub
    cache (train/hub.py) and read as the folder it gives; a folder hrm.export wrote is its model.safetensors, the
    original's released folder its `checkpoint`; anything else is returned as given (checkpoint_file explains)."""
    if is_hub_id(source):
        source = resolve(source)
    if os.path.isdir(source):
        for name in (EXPORTED_WEIGHTS, RELEASED_WEIGHTS):
            if os.path.isfile(os.path.join(source, name)) and not step_files(source):
                return os.path.join(source, name)
    return source


def checkpoint_file(path: str) -> str:
    """The weights file `checkpoint=` names; a run folder, a `.state` file or a missing file is answered with
    the step files there (the weights are the `step_N` beside `step_N.state`)."""
    if os.path.isfile(path) and not path.endswith(STATE_SUFFIX):
        return path
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    weights = path.removesuffix(STATE_SUFFIX)
    if os.path.isdir(path):
        what = f"{path!r} is a folder, not a checkpoint file"
    elif os.path.isfile(path):
        what = f"{path!r} is a training state (optimizers, RNG, data position), not weights"
        if os.path.isfile(weights):
            raise UserError(f"{what}; its weights are checkpoint={shlex.quote(weights)}")
    else:
        what = f"checkpoint file {path!r} does not exist"
    steps = step_files(folder)
    if not steps:
        raise UserError(f"{what}; give checkpoint=<run folder>/step_N")
    listed = ", ".join(shlex.quote(os.path.join(folder, n)) for n in steps[:5]) + (", ..." if len(steps) > 5 else "")
    raise UserError(f"{what}; step files in {folder}: {listed} (give one as checkpoint=...)")


def model_shape(ckpt: str, data_path: str) -> tuple[PuzzleDatasetMetadata, str | None]:
    """What shapes the model of checkpoint `ckpt` (vocabulary, sequence length, puzzle identifiers), and a note
    for the user or None: the checkpoint's own metadata (step_N.json, train/checkpoint.read_model_info), so any
    data folder, or none, will do; else (the original's and the released checkpoints) the dataset folder's."""
    from dataset.loader import model_metadata

    info = read_model_info(ckpt)
    if info is not None:
        return PuzzleDatasetMetadata(**info["dataset"]), None
    meta, has_train = model_metadata(data_path)
    return meta, None if has_train else f"{data_path} has no train split: the model's shape is read from its test split"


def read_weights(path: str) -> Any:
    """A weights file as a dict: a torch file (weights_only: it cannot run code) or an exported .safetensors."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (OSError, SafetensorError) as e:
            raise UserError(f"cannot read weights {path} ({type(e).__name__}: {e}); export the model again") from None
    return load_tensors(path, "cannot read checkpoint {path}: {why}")


def saved_arch(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """arch.* values readable off the weights' shapes (what a mismatch message can tell the user to set)."""
    out: dict[str, int] = {}
    emb = state.get("model.inner.embed_tokens.embedding_weight")
    if emb is not None and emb.ndim == 2:
        out["hidden_size"] = int(emb.shape[1])
    pe = state.get("model.inner.puzzle_emb.weights")
    out["puzzle_emb_ndim"] = int(pe.shape[1]) if pe is not None and pe.ndim == 2 else 0
    for level in ("H", "L"):
        layers = {k.split(".")[4] for k in state if k.startswith(f"model.inner.{level}_level.layers.")}
        if layers:
            out[f"{level}_layers"] = len(layers)
    return out


def load_checkpoint(path: str, model: torch.nn.Module, data_path: str) -> None:
    """Load the original's or our weights (weights_only: a checkpoint cannot run code), or an exported model's."""
    state = read_weights(path)
    try:  # a .state beside the weights holds their checksum: a flipped byte is refused, not evaluated
        verify_weights(path, state)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no model weights (a {type(state).__name__} of other things)")
    state = {str(k).removeprefix("_orig_mod."): v for k, v in state.items()}

    own = model.state_dict()
    # Counts that come from the dataset: a mismatch means another dataset (build).
    for key, what in (
        ("model.inner.puzzle_emb.weights", "puzzle identifiers"),
        ("model.inner.embed_tokens.embedding_weight", "tokens in its vocabulary"),
    ):
        if key in state and key in own and state[key].ndim == 2 and state[key].shape[0] != own[key].shape[0]:
            raise UserError(
                f"checkpoint has {state[key].shape[0]} {what} but dataset {data_path} has {own[key].shape[0]}: "
                "it was trained on another dataset build; pass the data_path it was trained with"
            )
    # Sizes that come from arch.*: name the keys to set.
    saved, current = saved_arch(state), saved_arch(own)
    fix = " ".join(f"arch.{k}={v}" for k, v in saved.items() if current.get(k) != v)
    for k in sorted(set(state) & set(own)):
        if state[k].shape != own[k].shape:
            raise UserError(
                f"checkpoint tensor {k} is {tuple(state[k].shape)} in {path} but {tuple(own[k].shape)} in this model: "
                + (f"it was trained with {fix}; add that" if fix else "check the arch.* settings it was trained with")
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(
            f"checkpoint {path} does not match the model: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}; "
            + (f"it was trained with {fix}; add that" if fix else "check arch.* settings")
        )
    model.load_state_dict(state, strict=True)
