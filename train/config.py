"""The training config: PretrainConfig (its keys and their defaults) and its checks (command-line keys, ranges,
the model's own). Used by pretrain.py, evaluate.py and predict.py; the run's names, folder and resume are
train/run_folder.py's.

Everything here runs on rank 0 before any data or GPU is touched.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pydantic
import yaml
from pydantic_core import PydanticCustomError

from train import curriculum
from train.functions import arch_config_class, load_model_class
from utils.errors import UserError, close_matches


class LossConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


class ArchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str
    loss: LossConfig


class PretrainConfig(pydantic.BaseModel):
    """Every training key with its default: the one place a default is written. Hydra composes these first
    (`pretrain_defaults` in config/cfg_pretrain.yaml's defaults list, registered by `register_defaults`), then
    config/arch/<arch>.yaml, a recipe, the command line. Keys and defaults as in the original; ours say "fork"."""

    model_config = pydantic.ConfigDict(extra="forbid")

    arch: ArchConfig  # config/arch/<name>.yaml (`arch=hrm_v1` by default), its keys set as arch.<key>=...
    data_path: str = "data/arc-aug-1000"  # the dataset folder (a builder's --output-dir: train/, test/, val/)
    recipe: str | None = None  # fork: the config/recipe/<name>.yaml this run started from (None: these defaults)

    # Hyperparams - training
    global_batch_size: int = 768  # examples per optimizer step, over all processes
    epochs: int = 100000  # passes over the training groups (the original's unit: steps = epochs x examples / batch)
    eval_interval: int | None = 10000  # epochs between evals (None: one eval, at the end)
    checkpoint_every_eval: bool = True  # keep the weights of every eval's step, not only the last ones

    lr: float = 1e-4  # peak learning rate of the blocks (AdamATan2)
    lr_min_ratio: float = 1.0  # the cosine decay ends at lr x this (1.0: constant after the warm-up)
    lr_warmup_steps: int = 2000  # linear warm-up from 0 to lr over this many steps

    # Standard LM settings, as used in Llama
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.95  # Adam's second-moment decay
    weight_decay: float = 0.1  # decoupled weight decay of the blocks (x lr a step)
    puzzle_emb_weight_decay: float = 0.1  # the same for the puzzle-embedding table

    # Hyperparams - puzzle embeddings
    puzzle_emb_lr: float = 1e-2  # learning rate of the puzzle-embedding table (sign-SGD)

    # fork: Muon for the blocks' weight matrices (muon.py; docs/training.md (Config keys)), a recipe change; off as in the paper
    muon: bool = False
    # Muon's base learning rate, under the same warm-up and decay as lr. Not nanoGPT's 0.02: on HRM (H200,
    # speedrun-hrm-b384, v2) 0.02 never solved a test puzzle in 7 minutes, 0.005 did (SPEEDRUN.md)
    muon_lr: float = 0.005
    muon_momentum: float = 0.95  # Muon's Nesterov momentum
    muon_weight_decay: float = 0.005  # x muon_lr: 2.5e-5 shrink a step (the measured pair; lr 1e-4 x 1.0 gives 1e-4)

    # fork: runtime choices (auto = pick the best that works here and say why at start)
    device: str = "auto"  # auto | cuda | cpu | mps
    attn_backend: str = "auto"  # auto | fa3 | fa2 | sdpa
    mlp_kernel: str = "auto"  # auto | fused | plain: the SwiGLU kernel of no-grad forwards (models/layers.py)
    compile: bool | str | None = "auto"  # auto (on for CUDA) | true | false; DISABLE_COMPILE=1 also turns it off
    # torch.compile's mode (train/runtime.compile_modes): None (its default) | reduce-overhead (CUDA graphs) |
    # max-autotune | max-autotune-no-cudagraphs
    compile_mode: str | None = None
    # what torch.compile compiles: model (the whole ACT model, one graph) | block (only the repeated reasoning
    # modules, in place; the rest eager): TRM's unrolled whole-model graph took ~1 min to compile per mode on an
    # H100; block compiles one small module instead, at some step time (less fusion; GPU effect not yet measured,
    # BENCHMARKS.md); not with CUDA-graph modes
    compile_scope: str = "model"
    nograd_fp8: bool = False  # training's no-grad forwards as fp8 GEMMs (models/layers.py); a recipe change
    wandb_mode: str = "auto"  # auto (online if logged in, else off) | online | offline | disabled

    # Names (None = filled at start: "<Dataset>-ACT-torch", "<recipe or model>-<two words>",
    # checkpoints/<project>/<run>: train/run_folder.py)
    project_name: str | None = None  # W&B project and checkpoints/<project>/
    run_name: str | None = None  # the run's name (W&B and the run folder)
    checkpoint_path: str | None = None  # the run folder (checkpoints, metrics.jsonl, all_config.yaml)

    seed: int = 0  # seeds torch, numpy, Python's random, data order and exploration (+ rank)
    eval_save_outputs: list[str] = []  # eval tensors saved per eval, e.g. [inputs,labels,logits] (score_sudoku.py)

    # fork: long runs (full-state checkpoints, resume, guards)
    resume: str | None = None  # auto (the newest complete checkpoint in checkpoint_path) | <run folder>/step_<N>
    checkpoint_interval: int | None = None  # also save a full-state checkpoint every N steps
    checkpoint_minutes: float | None = 30.0  # and every M minutes of training (None: only at evals)
    keep_last: int = 2  # full-state checkpoints kept (plus the best); 0 keeps all
    nan_policy: str = "skip"  # skip | stop, for a non-finite loss or gradient
    max_nan_skips: int = 20  # consecutive skipped steps before stopping anyway
    save_error: str = "stop"  # stop | continue, when a checkpoint cannot be written (disk full...)
    early_stop_exact_accuracy: float | None = None  # e.g. 0.99: stop when train exact accuracy stays above this...
    early_stop_patience: int = 1000  # ...for this many steps
    eval_batches: int | None = None  # evaluate on at most N batches of each test set (None: all)
    # also log every ACT segment's accuracy and halting: <set>/step_<i>/... (evaluate.py per_step=true)
    eval_per_step: bool = False
    # test-time augmentation at training evals: K copies per test puzzle (Sudoku, Maze; train/tta.py); 1: off
    eval_tta: int = 1
    eval_tta_every: bool = False  # TTA at every eval (each costs K plain evaluations), not only the run's last
    # global batch for evaluation (None: global_batch_size, as the original); e.g. 3072: +6% eval speed on an H100
    eval_batch_size: int | None = None
    augment_online: bool = False  # Sudoku/Maze: a fresh random symmetry of every training example (a recipe change)
    # per process: accumulate gradients over micro-batches to save memory; e.g. 96 trains batch 768 in 8 slices
    micro_batch_size: int | None = None

    # fork: TRM's exponential moving average of the weights (train/ema.py), a recipe change, off as in the original:
    # evaluation and the best checkpoint use it when on
    ema: bool = False
    ema_rate: float = 0.999  # the average keeps this much of itself each step
    ema_eval_raw: bool = True  # with ema, also evaluate the raw weights: logged as raw/<set>/<metric>

    # fork: training rows halt as soon as their answer is exact, from the first step (models/act.py; the halting a
    # perfect Q-head would do), a recipe change, off as in the paper; evaluation is unchanged
    halt_on_exact: bool = False

    # fork: curricula (train/curriculum.py), recipe changes, off as in the paper: stages [until, value...], until a
    # fraction of the run's steps, then the arch's setting; evals always run the arch's.
    # TRM trained shallow early (CGAR): stages [until, H_cycles, L_cycles], e.g. [[0.3,1,2],[0.6,2,4]]
    depth_curriculum: list[list[float]] = []
    # fewer supervision segments early (HRM and TRM): stages [until, halt_max_steps], e.g. [[0.3,4],[0.6,8]]
    segments_curriculum: list[list[float]] = []

    @pydantic.field_validator("eval_tta", mode="before")
    @classmethod
    def _whole_copies(cls, v: Any) -> Any:
        # before pydantic's own check, which reads eval_tta=true as 1 and would silently turn the request off
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PydanticCustomError(
                "eval_tta", "give a whole number >= 1 of transformed copies per test puzzle (1: off), e.g. eval_tta=8"
            )
        return v


def defaults() -> dict[str, Any]:
    """Every key but arch with its default, as Hydra composes them (config/cfg_pretrain.yaml holds none)."""
    fields = PretrainConfig.model_fields.items()
    return {k: f.get_default(call_default_factory=True) for k, f in fields if k != "arch"}


DEFAULTS_NAME = "pretrain_defaults"  # the entry of config/cfg_pretrain.yaml's defaults list that is `defaults()`


def register_defaults() -> None:
    """Hand `defaults()` to Hydra under DEFAULTS_NAME: call before Hydra composes cfg_pretrain (pretrain.main)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=DEFAULTS_NAME, node=defaults())


# Keys the trainer fills in for the model from the dataset; not settable in arch.
MODEL_KEYS_FROM_DATA = ("batch_size", "seq_len", "num_puzzle_identifiers", "vocab_size", "causal")


def arch_model_keys(arch_name: str) -> set[str]:
    """Settable arch.* keys: the model config's fields minus those filled from the data."""
    cfg_cls = arch_config_class(arch_name)
    fields = set(cfg_cls.model_fields) if cfg_cls is not None else set()
    return fields - set(MODEL_KEYS_FROM_DATA)


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")
ARCH_DIR = os.path.join(CONFIG_DIR, "arch")


def group_choices(group: str) -> list[str]:
    """The names `<group>=<name>` accepts: config/<group>/<name>.yaml."""
    folder = os.path.join(CONFIG_DIR, group)
    return sorted(n.removesuffix(".yaml") for n in os.listdir(folder) if n.endswith(".yaml"))


def recipe_arch_keys(recipe: str) -> set[str]:
    """The arch.* keys a recipe file sets."""
    path = os.path.join(CONFIG_DIR, "recipe", f"{recipe}.yaml")
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        return set((yaml.safe_load(f) or {}).get("arch") or {})


def recipe_arch(recipe: str) -> str | None:
    """The arch a recipe selects (`- override /arch: <choice>` in its defaults list), None: the default arch."""
    with open(os.path.join(CONFIG_DIR, "recipe", f"{recipe}.yaml")) as f:
        entries = (yaml.safe_load(f) or {}).get("defaults") or []
    return next((e["override /arch"] for e in entries if isinstance(e, dict) and "override /arch" in e), None)


def check_choices(argv: list[str]) -> dict[str, str]:
    """`arch=<name>` and `recipe=<name>` name existing files; one line with the choices instead of Hydra's page of
    search paths (exit 1). Returns the choices given."""
    given = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        group = key.lstrip("+")
        if group in ("arch", "recipe") and eq:
            if value not in group_choices(group) and not (group == "recipe" and value == "null"):
                raise UserError(
                    f"unknown {group} {value!r}{close_matches(value, group_choices(group))}; "
                    f"available: {', '.join(group_choices(group))} (config/{group}/)"
                )
            given[group] = value
    return given


def _arch_yaml(choice: str) -> dict:
    """config/arch/<choice>.yaml ({} if there is none: Hydra then names the missing choice)."""
    path = os.path.join(ARCH_DIR, f"{choice}.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def unknown_arch_key(key: str, arch_name: str, choice: str | None = None) -> UserError:
    """`arch.<key>` is not a setting of this arch: name the arch config that has it (HRM vs TRM), else close matches."""
    for f in sorted(n for n in os.listdir(ARCH_DIR) if n.endswith(".yaml")):
        other = _arch_yaml(f.removesuffix(".yaml")).get("name")
        if other and other != arch_name and key in arch_model_keys(other):
            return UserError(
                f"arch.{key} is not a setting of arch={choice or arch_name}, it belongs to arch={f.removesuffix('.yaml')} "
                f"({other}); drop it or choose that arch"
            )
    hint = close_matches(key, arch_model_keys(arch_name))
    return UserError(
        f"unknown config key 'arch.{key}'" + hint.replace("mean: ", "mean: arch.").replace(", ", ", arch.")
    )


def check_cli_overrides(argv: list[str]) -> list[str]:
    """Catch typos in `key=value` overrides before Hydra does, naming close matches (the original failed with
    Hydra's struct error or, for `+key=...`, silently ignored the key). Returns argv with a redundant `+`
    dropped, so `+checkpoint_path=...` (needed by the original, whose YAML lacked the key) still works."""
    top = set(PretrainConfig.model_fields)
    # The arch config group picked with `arch=<choice>`, else by the recipe, else hrm_v1; and its model class
    given = check_choices(argv)
    recipe = given.get("recipe", "null")
    choice = given.get("arch") or (recipe_arch(recipe) if recipe != "null" else None) or "hrm_v1"
    arch_yaml = _arch_yaml(choice)
    name = next((a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith("arch.name=")), arch_yaml.get("name"))
    name = name or "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    arch = arch_model_keys(name) | {"name", "loss", "loss.name", "loss.loss_type"}
    out = []
    seen: dict[str, str] = {}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue
        key = arg.split("=", 1)[0]
        bare = key.lstrip("+~")
        # Two recipes or two archs: Hydra takes the last group file without a word (plain keys keep Hydra's
        # documented last-one-wins, which scripts rely on to override a key)
        if bare in ("recipe", "arch") and bare in seen:
            raise UserError(f"{bare} is given twice ({seen[bare]} and {arg}); keep one")
        seen[bare] = arg
        if bare.startswith("hydra.") or bare.startswith("hydra/") or bare in ("arch", "recipe"):
            out.append(arg.lstrip("+") if bare == "recipe" else arg)  # `+recipe=`: Hydra refuses the `+` (in defaults)
            continue
        if bare.startswith("arch."):
            sub = bare[len("arch.") :]
            if sub not in arch:
                raise unknown_arch_key(sub, name, choice)
        elif bare not in top:
            raise UserError(f"unknown config key {bare!r}{close_matches(bare, top)}")
        value = arg.split("=", 1)[1]
        if (any(not c.isascii() for c in value) or "=" in value) and value[:1] not in ("'", '"', "[", "{"):
            # Hydra's grammar refuses these unquoted (a page of parser errors): a path like data/süd or data/a=b
            arg = arg.split("=", 1)[0] + "='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if key.startswith("+") and not key.startswith("++") and bare in _yaml_keys(arch_yaml):
            arg = arg[1:]
        elif not key.startswith(("+", "~")) and bare.startswith("arch.") and bare.split(".")[1] not in arch_yaml:
            # a model key the arch yaml leaves to its default (arch.forward_dtype, arch.rope_theta...): Hydra
            # wants `+` to add it; the README's keys work as written without it
            arg = "+" + arg
        out.append(arg)
    return out


def _yaml_keys(arch_yaml: dict) -> set[str]:
    """Keys Hydra's composed config has (every PretrainConfig key and the chosen arch yaml's): a `+` before them
    makes Hydra fail."""
    return (set(PretrainConfig.model_fields) - {"arch"}) | {f"arch.{k}" for k in arch_yaml}


def eval_batch(config: PretrainConfig) -> int:
    """Global batch of the test loader: eval rows are independent, so any size gives the same metrics."""
    return config.eval_batch_size or config.global_batch_size


def validate_config(config: PretrainConfig) -> None:
    """Everything checkable before touching data or GPU, with the fix in the message."""
    if config.recipe is not None and config.recipe not in group_choices("recipe"):
        # a name, never a path: a crafted all_config.yaml's `recipe: ../../x` would open a file outside config/
        raise UserError(f"recipe={config.recipe!r} is not one of config/recipe/ ({', '.join(group_choices('recipe'))})")
    extras = dict(config.arch.__pydantic_extra__ or {})
    allowed = arch_model_keys(config.arch.name)
    load_model_class(config.arch.loss.name)  # the loss head must be one of models/losses.py's classes
    for k in extras:
        if k not in allowed:
            if config.recipe and k in recipe_arch_keys(config.recipe):  # `recipe=trm-sudoku arch=hrm_v1`
                raise UserError(
                    f"recipe={config.recipe} sets arch.{k}, which {config.arch.name} does not have: the recipe is for "
                    f"arch={recipe_arch(config.recipe) or 'hrm_v1'}; drop the arch=... override or pick another recipe"
                )
            raise unknown_arch_key(k, config.arch.name)
    for name in ("global_batch_size", "epochs", "eval_batch_size"):
        if getattr(config, name) is not None and getattr(config, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(config, name)}")
    if config.eval_interval is not None:
        if config.eval_interval <= 0:
            raise UserError(f"eval_interval must be positive, got {config.eval_interval}")
        if config.epochs % config.eval_interval != 0:
            divisors = [d for d in range(1, min(config.epochs, 100000) + 1) if config.epochs % d == 0]
            near = sorted(divisors, key=lambda d: abs(d - config.eval_interval))[:3]  # type: ignore[operator]
            raise UserError(
                f"eval_interval={config.eval_interval} must divide epochs={config.epochs}; "
                f"try eval_interval={' or '.join(map(str, sorted(near)))}"
            )
    for name, lo, hi, below in CONFIG_RANGES:
        check_range(name, getattr(config, name), lo, hi, below)
    for name, allowed in (("nan_policy", ("skip", "stop")), ("save_error", ("stop", "continue"))):
        if getattr(config, name) not in allowed:
            raise UserError(f"{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    if not 0.0 < config.ema_rate < 1.0:
        raise UserError(f"ema_rate must be between 0 and 1 (TRM uses 0.999), got {config.ema_rate}")
    for name in ("checkpoint_interval", "checkpoint_minutes", "eval_batches", "micro_batch_size"):
        v = getattr(config, name)
        if v is not None and not (0 < v < math.inf):  # `not`: NaN fails too
            raise UserError(f"{name} must be positive or null, got {v}")
    curriculum.check_config(config, load_model_class(config.arch.name), config.arch.name)
    validate_arch(config)


# (key, low, high, high excluded) of numeric keys; NaN and inf never pass (a NaN learning rate trained to NaN
# weights and exited 0; beta1=1.5 failed in the optimizer, lr_min_ratio=-1 gave negative learning rates).
CONFIG_RANGES: tuple[tuple[str, float, float | None, bool], ...] = (
    ("lr", 0, None, False),
    ("puzzle_emb_lr", 0, None, False),
    ("weight_decay", 0, None, False),
    ("puzzle_emb_weight_decay", 0, None, False),
    ("muon_lr", 0, None, False),
    ("muon_momentum", 0, 1, True),
    ("muon_weight_decay", 0, None, False),
    ("lr_warmup_steps", 0, None, False),
    ("lr_min_ratio", 0, 1, False),
    ("beta1", 0, 1, True),
    ("beta2", 0, 1, True),
    ("keep_last", 0, None, False),
    ("seed", 0, None, False),
    ("max_nan_skips", 1, None, False),
    ("early_stop_exact_accuracy", 0, 1, False),
    ("early_stop_patience", 1, None, False),
)


def check_range(name: str, value: float | None, lo: float, hi: float | None, below: bool) -> None:
    """One line naming the key, the value and the accepted range; None (unset) passes."""
    if value is None:
        return
    if not (math.isfinite(value) and value >= lo and (hi is None or (value < hi if below else value <= hi))):
        upper = f"{'<' if below else '<='} {hi}" if hi is not None else "finite"
        raise UserError(f"{name}={value} is out of range: it must be >= {lo} and {upper}")


def validate_arch(config: PretrainConfig) -> None:
    """The model config's own checks (types, ranges, num_heads dividing hidden_size), run now with stand-ins
    for the keys filled from the data, so a bad arch.* value fails before any data or run folder is touched."""
    cfg_cls = arch_config_class(config.arch.name)
    if cfg_cls is None:
        return
    stand_ins = {"batch_size": 1, "seq_len": 1, "num_puzzle_identifiers": 1, "vocab_size": 1, "causal": False}
    try:
        cfg_cls(**((config.arch.__pydantic_extra__ or {}) | stand_ins))
    except pydantic.ValidationError as e:
        raise config_error(e, prefix="arch.") from None


def config_error(e: Exception, prefix: str = "") -> UserError:
    if isinstance(e, UserError):
        return e
    parts = []
    for err in e.errors():  # type: ignore[attr-defined]
        loc = prefix + ".".join(map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown config key {loc!r}{close_matches(loc, PretrainConfig.model_fields)}")
        elif err["type"] == "missing":
            parts.append(f"{loc}: {err['msg']}")
        elif not err["loc"]:  # a check across keys (e.g. num_heads must divide hidden_size)
            parts.append(f"{loc.rstrip('.') or 'config'}: {err['msg'].removeprefix('Value error, ')}")
        else:  # key=value: what is wrong with it (pydantic says the accepted type or range)
            parts.append(f"{loc}={err.get('input')!r}: {err['msg']}")
    return UserError("bad config: " + "; ".join(parts))
