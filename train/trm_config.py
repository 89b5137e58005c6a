"""Read TRM's all_config.yaml (SamsungSAILMontreal/TinyRecursiveModels), which differs from ours in a few keys."""

from __future__ import annotations

from typing import Any

from utils.errors import UserError

# TRM keys that do not change what evaluating a checkpoint computes: dropped. `ema`/`ema_rate` too: TRM saves
# the EMA weights themselves as step_N, so its checkpoints are already what ema=true would evaluate.
TRM_ONLY_KEYS = (
    "data_paths_test",
    "evaluators",
    "load_checkpoint",
    "min_eval_interval",
    "freeze_weights",
    "ema",
    "ema_rate",
)


def from_trm_config(cfg: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """TRM's config -> ours: its `data_paths` list becomes `data_path` (unless given on the command line)."""
    if "data_paths" not in cfg:
        return cfg
    cfg = dict(cfg)
    paths = cfg.pop("data_paths") or []
    test_paths = cfg.get("data_paths_test") or []
    if "data_path" not in cli:
        if len(paths) != 1 or test_paths:
            raise UserError(
                f"this TRM all_config.yaml trains on data_paths={paths}"
                + (f" and tests on data_paths_test={test_paths}" if test_paths else "")
                + "; this fork reads one dataset: give data_path=<the dataset folder to evaluate on>"
            )
        cfg["data_path"] = paths[0]
    for k in TRM_ONLY_KEYS:
        cfg.pop(k, None)
    return cfg
