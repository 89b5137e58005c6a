"""Train HRM: `python pretrain.py data_path=... [key=value ...]` (Hydra overrides, as in the original).

Same loop, config keys, checkpoints and metrics as the original; the differences are fixes (see README):
CPU/MPS/CUDA, optional FlashAttention, a compile guard, W&B optional, a seeded sampler, config checked
once at start with clear errors, bucketed gradient all-reduce, metrics also in <run>/metrics.jsonl.

This file is the command: Hydra's entry and the launch. The engine is the package train/ (docs/layout.md); the
original's functions keep their names here too (`pretrain.train_batch`, `pretrain.evaluate`...), handed on from
train/steps.py, train/config.py and train/run_folder.py, for readers of the original and scripts written against it.
"""

from __future__ import annotations

import utils.interrupt  # noqa: F401  (first: Ctrl-C during the imports below prints one line)

# isort: split

import train.records  # noqa: F401  (early too: its clock, the time to accuracy, starts before torch's import)

# isort: split

import os
import sys
from typing import Any

import torch.distributed as dist

from train.config import (  # noqa: F401  (the original's names, re-exported)
    PretrainConfig,
    check_cli_overrides,
    config_error,
    defaults,
    eval_batch,
    register_defaults,
    validate_config,
)
from train.loop import run
from train.rng import seed_everything
from train.run_folder import (  # noqa: F401  (re-exported)
    Resumed,
    check_writable,
    healthy_hint,
    load_synced_config,
    remove_made_dirs,
    resolve_config,
    resolve_resume,
    resume_command,
)
from train.runtime import init_distributed, setup_runtime
from train.steps import (  # noqa: F401  (the original's names, re-exported)
    StepResult,
    TrainState,
    compute_lr,
    cosine_schedule_with_warmup_lr_lambda,
    create_dataloader,
    create_model,
    eval_headline,
    evaluate,
    finish_step,
    init_train_state,
    restore_train_state,
    save_code_and_config,
    save_train_state,
    train_batch,
)
from utils.cli_help import choices, config_dir, field_docs, format_rows, key_rows, wants_help, yaml_rows
from utils.errors import UserError, exit_with


def launch(hydra_config: Any) -> None:
    d = init_distributed(str(hydra_config.get("device", "auto")))
    finished = False
    try:
        config, resumed = load_synced_config(hydra_config, d)
        seed_everything(config.seed, d.rank)
        rt = setup_runtime(config, d, training=True)
        run(config, rt, resumed)
        finished = True
    finally:
        if dist.is_initialized():
            if finished and d.world_size > 1:
                # No rank tears its group down while a peer may still talk to it: one CI run saw rank 0 abort
                # at exit ("terminate called without an active exception", a gloo thread destroyed while
                # joinable) after a finished run. Only after a clean finish: a peer that failed may be gone.
                dist.barrier()
            dist.destroy_process_group()


def pretrain_help() -> str:
    arch_rows = yaml_rows(os.path.join(config_dir(), "arch", "hrm_v1.yaml"), prefix="arch.")
    return "\n".join(
        [
            "usage: python pretrain.py [recipe=<recipe>] [arch=<arch>] data_path=<dataset folder> [key=value ...]",
            "       torchrun --nproc-per-node <GPUs> pretrain.py ...   (several GPUs: the same keys)",
            "",
            f"recipes (config/recipe/<name>.yaml): {', '.join(choices('recipe'))}",
            f"archs (config/arch/<name>.yaml; default hrm_v1): {', '.join(choices('arch'))}",
            "",
            "keys (key=default, then what it is; docs/training.md has more):",
            format_rows(key_rows(defaults(), field_docs(PretrainConfig))),
            "",
            "model keys of arch=hrm_v1 (arch.<key>=value; another arch's are in config/arch/<name>.yaml):",
            format_rows(arch_rows),
            "",
            "Hydra's own options: python pretrain.py --hydra-help",
        ]
    )


def main() -> None:
    if wants_help(sys.argv[1:]):  # ours, not Hydra's: every key with its default and what it is
        print(pretrain_help())
        return
    try:
        sys.argv[1:] = check_cli_overrides(sys.argv[1:])
    except UserError as e:
        exit_with(e)

    import hydra

    register_defaults()  # config/cfg_pretrain.yaml composes PretrainConfig's defaults first

    @hydra.main(config_path="config", config_name="cfg_pretrain", version_base=None)
    def _entry(hydra_config: Any) -> None:
        try:
            launch(hydra_config)
        except UserError as e:
            exit_with(e)
        finally:
            remove_made_dirs()

    _entry()


if __name__ == "__main__":
    main()
