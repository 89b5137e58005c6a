"""Evaluate a checkpoint: `python evaluate.py checkpoint=<run folder>/step_<N> [key=value ...]`.

Reads `all_config.yaml` beside the checkpoint (as the original). Checkpoints without it (the released
Hugging Face ones) need `data_path=...` and any non-default `arch.*` on the command line; other
`key=value` pairs override the saved config (e.g. `global_batch_size=256 device=cpu`). Accepts keys with
or without torch.compile's `_orig_mod.` prefix. Writes `step_<N>_all_preds.<rank>` beside the checkpoint
(a dict of the tensors named in `save_outputs`), the original's format; `output_dir=<folder>` writes it
elsewhere (a read-only run folder), `save_outputs=[]` writes nothing.

`tta=K` (Sudoku, Maze) also solves K transformed copies of every test puzzle and votes (utils/tta.py);
`tta_prefer_valid=false` drops the preference for valid Sudoku solutions, `tta_seed` picks the transforms.
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)

# isort: split

import os
import re
import shlex
import sys
import warnings
from typing import Any

import torch
import torch.distributed as dist
import yaml
from omegaconf import OmegaConf

from pretrain import TrainState, create_dataloader, create_model, eval_headline, evaluate, setup_runtime
from utils import checkpoint as ckpt_io
from utils.checkpoint import EMA_SUFFIX
from utils.config import PretrainConfig, config_error, eval_batch, validate_config
from utils.errors import UserError, close_matches, exit_with, load_error
from utils.runtime import init_distributed
from utils.trm_config import from_trm_config
from utils.tta import evaluate_tta, puzzle_kind

DEFAULT_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]
REPO = os.path.dirname(os.path.abspath(__file__))


def default_config() -> dict[str, Any]:
    """cfg_pretrain.yaml with arch/hrm_v1.yaml, as Hydra would compose them with no overrides."""
    base = OmegaConf.load(os.path.join(REPO, "config", "cfg_pretrain.yaml"))
    base.pop("defaults", None)
    base.pop("hydra", None)
    base.arch = OmegaConf.load(os.path.join(REPO, "config", "arch", "hrm_v1.yaml"))
    return OmegaConf.to_container(base, resolve=True)  # type: ignore[return-value]


def load_eval_config(cli: dict[str, Any]) -> tuple[PretrainConfig, str, list[str]]:
    cli = dict(cli)
    ckpt = cli.pop("checkpoint", None)
    if not ckpt:
        raise UserError("usage: python evaluate.py checkpoint=<path to step_N file> [data_path=...] [key=value ...]")
    ckpt = checkpoint_file(str(ckpt))
    save_outputs = cli.pop("save_outputs", DEFAULT_OUTPUTS)
    out_dir = str(cli.pop("output_dir", None) or os.path.dirname(ckpt) or ".")

    cfg_file = os.path.join(os.path.dirname(ckpt), "all_config.yaml")
    if os.path.isfile(cfg_file):
        base = from_trm_config(read_config_file(cfg_file), cli)  # TRM's file: data_paths list, its extra keys
        source = cfg_file
    else:
        if "data_path" not in cli:
            raise UserError(
                f"no all_config.yaml beside {ckpt} (as with the released Hugging Face checkpoints): "
                "give data_path=<dataset folder> and any arch.* settings the model was trained with"
            )
        base = default_config()
        source = "defaults (config/cfg_pretrain.yaml)"

    merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(cli))
    known = set(PretrainConfig.model_fields)
    for k in cli:
        if k not in known:
            raise UserError(f"unknown key {k!r}{close_matches(k, known | {'checkpoint', 'save_outputs'})}")
    try:
        config = PretrainConfig(**OmegaConf.to_container(merged, resolve=True))  # type: ignore[arg-type]
    except Exception as e:
        raise config_error(e) from None
    validate_config(config)
    config.eval_save_outputs = list(save_outputs)
    if config.eval_save_outputs:
        check_output_dir(out_dir, ckpt)
    config.checkpoint_path = out_dir
    print(f"config: {source}")
    return config, ckpt, list(save_outputs)


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


def checkpoint_file(path: str) -> str:
    """The weights file `checkpoint=` names; a run folder, a `.state` file or a missing file is answered with
    the step files there (the weights are the `step_N` beside `step_N.state`)."""
    if os.path.isfile(path) and not path.endswith(ckpt_io.STATE_SUFFIX):
        return path
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    weights = path.removesuffix(ckpt_io.STATE_SUFFIX)
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


def read_config_file(path: str) -> dict[str, Any]:
    """all_config.yaml as plain YAML: a python tag (`!!python/object...`) or other non-data is refused."""
    try:
        with open(path) as f:
            base = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(
            f"{path} is not a plain YAML config ({first}); it must be the all_config.yaml pretrain.py writes"
        ) from None
    if not isinstance(base, dict):
        raise UserError(
            f"{path} holds a {type(base).__name__}, not a config; it must be the all_config.yaml pretrain.py writes"
        )
    return base


def check_output_dir(out_dir: str, ckpt: str) -> None:
    """Predictions go beside the checkpoint; a read-only folder is found now, not after the whole evaluation."""
    probe = os.path.join(out_dir, f".write-test-{os.getpid()}")
    try:
        os.makedirs(out_dir, exist_ok=True)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"cannot write predictions (step_N_all_preds.*) to {out_dir} ({e.strerror or e}); "
            f"add output_dir=<writable folder>, or save_outputs=[] to write none"
        ) from None


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
    """Load the original's or our weights (weights_only: a checkpoint cannot run code)."""
    try:
        with warnings.catch_warnings():  # torch warns about a crafted file's pickle protocol before refusing it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: {load_error(e)}") from None
    try:  # a .state beside the weights holds their checksum: a flipped byte is refused, not evaluated
        ckpt_io.verify_weights(path, state)
    except ValueError as e:
        raise UserError(str(e)) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # full-state checkpoint: take the weights
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


def tta_options(cli: dict[str, Any]) -> tuple[int, bool, int]:
    """Pop `tta=K [tta_prefer_valid=true] [tta_seed=0]` (test-time augmentation, utils/tta.py)."""
    k, prefer, seed = cli.pop("tta", 1), cli.pop("tta_prefer_valid", True), cli.pop("tta_seed", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"tta must be a whole number >= 1 (transformed copies per test puzzle), got {k!r}")
    if not isinstance(prefer, bool):
        raise UserError(f"tta_prefer_valid must be true or false, got {prefer!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"tta_seed must be a whole number, got {seed!r}")
    return k, prefer, seed


def check_tta_kind(kind: str, k: int, config: PretrainConfig, ckpt: str) -> None:
    if k == 1:
        return
    if kind == "arc":
        raise UserError(
            "tta is for Sudoku and Maze; ARC votes over the augmentations already in its test set: "
            f"python dataset/score_arc.py --preds {os.path.dirname(ckpt) or '.'} --data {config.data_path}"
        )
    if kind not in ("sudoku", "maze"):
        raise UserError("tta needs a Sudoku (seq 81, vocab 11) or Maze (seq 900, vocab 6) dataset")
    if kind == "maze" and k > 8:
        raise UserError(f"a maze has 8 symmetries: tta must be <= 8, got {k}")


def launch(cli: dict[str, Any]) -> None:
    d = init_distributed(str(cli.get("device", "auto")))
    try:
        tta, tta_prefer_valid, tta_seed = tta_options(cli)
        ema = cli.pop("ema", "auto")
        config, ckpt, _ = load_eval_config(cli) if d.is_main else (None, "", [])
        if d.world_size > 1:
            obj = [(config, ckpt)]
            dist.broadcast_object_list(obj, src=0)
            config, ckpt = obj[0]
        assert config is not None
        rt = setup_runtime(config, d)
        train_loader, train_meta = create_dataloader(
            config,
            "train",
            d,
            rt.device,
            test_set_mode=False,
            epochs_per_iter=1,
            global_batch_size=config.global_batch_size,
        )
        eval_loader, eval_meta = create_dataloader(
            config,
            "test",
            d,
            rt.device,
            test_set_mode=True,
            epochs_per_iter=1,
            global_batch_size=eval_batch(config),
        )
        check_tta_kind(
            puzzle_kind(eval_meta.seq_len, eval_meta.vocab_size, eval_meta.num_puzzle_identifiers), tta, config, ckpt
        )
        model, optimizers, lrs = create_model(config, train_meta, d, rt.device, rt.forward_dtype, rt.use_compile)
        weights = weights_file(ckpt, ema)
        load_checkpoint(weights, model.eager, config.data_path)

        name = os.path.basename(ckpt)
        step = (
            int(name.removeprefix("step_")) if name.startswith("step_") and name.removeprefix("step_").isdigit() else 0
        )
        state = TrainState(model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=step, total_steps=0)
        if d.is_main:
            which = "the weight average, ema=false for the raw weights" if weights != ckpt else "its weights"
            print(
                f"evaluating {weights} ({which}) on {config.data_path} ({rt.device.type}, {rt.forward_dtype})",
                flush=True,
            )
        model.eager.eval()
        metrics = evaluate(config, state, eval_loader, eval_meta, d, rt.device)
        if d.is_main and metrics is not None:
            for set_name, m in metrics.items():
                print(f"{set_name}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items()))
            for line in eval_headline(metrics, model.eager.model.config.halt_max_steps):  # type: ignore[union-attr]
                print(line)
            print(f"predictions: {os.path.join(config.checkpoint_path or '', f'step_{step}_all_preds.{d.rank}')}")
        if tta > 1 and d.is_main:  # one process: K copies of each test puzzle, voted on whole grids
            steps = model.eager.model.config.halt_max_steps  # type: ignore[union-attr]
            scores = evaluate_tta(
                model, model.eager, config.data_path, eval_meta, tta, eval_batch(config) // d.world_size, steps,
                rt.device, prefer_valid=tta_prefer_valid, seed=tta_seed,
            )  # fmt: skip
            rule = "most votes, ties by mean sigmoid(q_halt)" + (
                ", valid solutions of the givens first" if tta_prefer_valid and eval_meta.seq_len == 81 else ""
            )
            print(f"test-time augmentation, {tta} transformed copies per puzzle ({rule}):")
            for set_name, m in scores.items():
                print(
                    f"{set_name}: tta_exact_accuracy={m['tta_exact_accuracy']:.4f}, tta_accuracy={m['tta_accuracy']:.4f} "
                    f"(one copy: exact {m['exact_accuracy']:.4f}, token {m['accuracy']:.4f})"
                )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main() -> None:
    try:
        cli = OmegaConf.to_container(OmegaConf.from_cli(sys.argv[1:]))
        launch(cli)  # type: ignore[arg-type]
    except UserError as e:
        exit_with(e)


if __name__ == "__main__":
    main()
