"""The config a checkpoint is evaluated with: its run's all_config.yaml (ours or TRM's), else the step_N.json
beside it, else the defaults and the command line (the released checkpoints), each refused as one line when it
is not what the trainer wrote. evaluate.py scores with it, hrm.load builds models with it; it lives here, below
both, so a library call never imports a script (evaluate.py's Ctrl-C handling is for its own process).
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from omegaconf import OmegaConf

from train.checkpoint import INFO_SUFFIX, read_model_info
from train.config import ARCH_DIR, PretrainConfig, config_error, validate_config
from train.config import defaults as config_defaults
from train.hub import is_hub_id
from train.trm_config import from_trm_config
from train.weights import checkpoint_file, model_source
from utils.errors import UserError, close_matches

# what evaluate.py saves per test example unless save_outputs= says otherwise (the original's step_N_all_preds)
DEFAULT_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]


def default_config() -> dict[str, Any]:
    """PretrainConfig's defaults with arch/hrm_v1.yaml, as Hydra composes config/cfg_pretrain.yaml with no overrides."""
    base = OmegaConf.create(config_defaults())
    base.arch = OmegaConf.load(os.path.join(ARCH_DIR, "hrm_v1.yaml"))
    return OmegaConf.to_container(base, resolve=True)  # type: ignore[return-value]


def load_eval_config(cli: dict[str, Any], log: Any = print) -> tuple[PretrainConfig, str, list[str]]:
    cli = dict(cli)
    ckpt = cli.pop("checkpoint", None)
    if not ckpt:
        raise UserError("usage: python evaluate.py checkpoint=<path to step_N file> [data_path=...] [key=value ...]")
    hub = is_hub_id(str(ckpt))
    ckpt = checkpoint_file(model_source(str(ckpt)))  # hf://, an exported or a released folder: its weights file
    given_dir = cli.pop("output_dir", None)
    # a Hub model's folder is the Hub cache, never written into: its predictions only where output_dir= says
    save_outputs = cli.pop("save_outputs", [] if hub and not given_dir else DEFAULT_OUTPUTS)
    out_dir = str(given_dir or ("." if hub else os.path.dirname(ckpt)) or ".")
    if hub and not given_dir:
        log("predictions not saved: give output_dir=<folder> to save them (a Hub model's folder is the Hub cache)")

    cfg_file = os.path.join(os.path.dirname(ckpt), "all_config.yaml")
    if os.path.isfile(cfg_file):
        base = from_trm_config(read_config_file(cfg_file), cli)  # TRM's file: data_paths list, its extra keys
        source = cfg_file
        check_same_model(cli.get("arch"), base.get("arch"), cfg_file)
    elif (info := read_model_info(ckpt)) is not None:  # a checkpoint copied without its run folder
        base, source = info["config"], ckpt + INFO_SUFFIX
        check_same_model(cli.get("arch"), base.get("arch"), source)
    else:
        if "data_path" not in cli:
            raise UserError(
                f"no all_config.yaml beside {ckpt} (as with the released Hugging Face checkpoints): "
                "give data_path=<dataset folder> and any arch.* settings the model was trained with"
            )
        base = default_config()
        source = "defaults (train/config.py, config/arch/hrm_v1.yaml)"

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
    log(f"config: {source}")
    return config, ckpt, list(save_outputs)


# arch keys that an evaluation may change: how deep it thinks (halt_max_steps, docs/evaluation.md), exploration
# (training only), the precision of the forward pass, the loss head's settings (the loss value, not the answers).
EVAL_ARCH_KEYS = ("halt_max_steps", "halt_exploration_prob", "forward_dtype", "loss")


def check_same_model(cli_arch: Any, saved_arch: Any, cfg_file: str) -> None:
    """An arch key on the command line that differs from the one the checkpoint was trained with builds another
    model around the same weights: where the shapes still match (heads, positions, encodings) it would evaluate
    that other model without a word. Refused, naming the trained value."""
    if not isinstance(cli_arch, dict) or not isinstance(saved_arch, dict):
        return
    for k, v in cli_arch.items():
        if k in EVAL_ARCH_KEYS or k not in saved_arch or saved_arch[k] == v:
            continue
        raise UserError(
            f"arch.{k}={v} differs from the checkpoint's arch.{k}={saved_arch[k]} ({cfg_file}): the weights belong to "
            f"that model; drop arch.{k} (evaluation may change only arch.{', arch.'.join(EVAL_ARCH_KEYS)})"
        )


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
