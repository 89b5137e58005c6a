"""config/recipe/<name>.yaml (`recipe=<name>`): a published recipe is the flags it stands for, the command line still
overrides it, no recipe is the paper default as before, and the Make targets that run records name real things."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import REPO, read_metrics, run_py
from train.config import (
    DEFAULTS_NAME,
    PretrainConfig,
    check_cli_overrides,
    defaults,
    group_choices,
    register_defaults,
    validate_config,
)
from utils.errors import UserError

# The recipes as flags: the Makefile's sudoku-mix target (the paper's Sudoku-1k) and TRM's README
# (pretrain_mlp_t_sudoku, on our CLI: data_paths/evaluators/+run_name are not recipe keys)
FLAGS = {
    "paper-sudoku": "epochs=20000 eval_interval=2000 global_batch_size=768 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 "
    "puzzle_emb_weight_decay=1.0",
    # speedrun candidate 1: the paper's recipe with TRM's halting and the weight average, evaluated more often
    "speedrun-hrm": "epochs=18000 eval_interval=1000 global_batch_size=768 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 "
    "puzzle_emb_weight_decay=1.0 ema=true ema_eval_raw=false eval_tta=16 arch.no_ACT_continue=true",
    # speedrun candidate 2: candidate 1 at half the batch (the lever that paid most alone)
    "speedrun-hrm-b384": "epochs=17000 eval_interval=1000 global_batch_size=384 lr=1e-4 puzzle_emb_lr=1e-4 "
    "weight_decay=1.0 puzzle_emb_weight_decay=1.0 ema=true ema_eval_raw=false eval_tta=16 arch.no_ACT_continue=true",
    "trm-sudoku": "arch=trm epochs=50000 eval_interval=5000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 "
    "puzzle_emb_weight_decay=1.0 arch.mlp_t=true arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 "
    "arch.L_cycles=6 ema=true",
    # TRM's speedrun candidate: trm-sudoku at half the batch with a 200-step warm-up, evaluated every 1,302 steps,
    # the block compiled alone and CGAR's depth curriculum over 6,510 steps
    "speedrun-trm": "arch=trm epochs=2500 eval_interval=500 global_batch_size=384 lr=1e-4 lr_warmup_steps=200 "
    "puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 ema=true ema_eval_raw=false arch.mlp_t=true "
    "arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 compile_scope=block "
    "depth_curriculum=[[0.3,1,2],[0.6,2,4]]",
}


def compose(overrides: list[str], config_dir: Path = REPO / "config") -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_defaults()  # as pretrain.main does: cfg_pretrain composes PretrainConfig's defaults first
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose("cfg_pretrain", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_each_default_is_written_once() -> None:
    """PretrainConfig (train/config.py) is the one home of every default: config/cfg_pretrain.yaml sets no key, only
    Hydra's defaults list (PretrainConfig's first) and Hydra's own settings, so the two cannot drift; what Hydra
    composes with no overrides is exactly those defaults, and so every field can be set as `key=value`."""
    raw = yaml.safe_load((REPO / "config" / "cfg_pretrain.yaml").read_text())
    assert set(raw) == {"defaults", "hydra"}, set(raw) - {"defaults", "hydra"}
    assert raw["defaults"][0] == DEFAULTS_NAME
    composed = compose([])
    assert composed.pop("arch")["name"].startswith("hrm.")
    assert composed == defaults()
    assert set(defaults()) == set(PretrainConfig.model_fields) - {"arch"}


def test_the_recipes_are_these() -> None:
    assert group_choices("recipe") == sorted(FLAGS)


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_recipe_is_its_flag_list(name: str) -> None:
    flags = FLAGS[name].split()
    by_recipe, by_flags, default = compose([f"recipe={name}"]), compose(flags), compose([])
    assert by_recipe.pop("recipe") == name and by_flags.pop("recipe") is None
    assert by_recipe == by_flags
    # ...and the recipe did override PretrainConfig's defaults (weight decay 0.1 there, 1.0 in both recipes)
    assert default["weight_decay"] == 0.1 and by_recipe["weight_decay"] == 1.0
    config = PretrainConfig(**by_recipe, recipe=name)
    validate_config(config)  # the recipe's keys are settings of its arch
    assert check_cli_overrides([f"recipe={name}", *flags]) == [f"recipe={name}", *flags]


def test_command_line_overrides_the_recipe() -> None:
    cfg = compose(["recipe=trm-sudoku", "lr=3e-4", "arch.L_cycles=4", "ema=false", "arch.hidden_size=256"])
    assert (cfg["lr"], cfg["arch"]["L_cycles"], cfg["ema"], cfg["arch"]["hidden_size"]) == (3e-4, 4, False, 256)
    assert cfg["arch"]["mlp_t"] is True and cfg["epochs"] == 50000  # the rest of the recipe stays
    assert cfg["arch"]["name"].startswith("recursive_reasoning.trm@")
    # the arch too: `arch=` on the command line beats the recipe's `override /arch`
    assert compose(["recipe=trm-sudoku", "arch=hrm_v1"])["arch"]["name"].startswith("hrm.")


def test_no_recipe_is_the_config_of_before(tmp_path: Path) -> None:
    """cfg_pretrain.yaml without the recipe entry and key (as before recipes) composes to the same config."""
    before = tmp_path / "config"
    shutil.copytree(REPO / "config", before)
    text = (before / "cfg_pretrain.yaml").read_text()
    text = text.replace("  - recipe: null\n", "").replace("\nrecipe: null\n", "\n")
    assert "recipe" not in yaml.safe_load(text) and "recipe: null" not in text
    (before / "cfg_pretrain.yaml").write_text(text)
    now, then = compose([]), compose([], before)
    assert now.pop("recipe") is None and then.pop("recipe") is None  # PretrainConfig's default, in both
    assert now == then
    assert now["arch"]["name"].startswith("hrm.") and now["lr"] == 1e-4 and now["ema"] is False


def test_recipe_arch_picks_the_keys_allowed_on_the_command_line() -> None:
    assert check_cli_overrides(["recipe=trm-sudoku", "arch.mlp_t=false"]) == ["recipe=trm-sudoku", "arch.mlp_t=false"]
    with pytest.raises(UserError, match="belongs to arch=trm"):
        check_cli_overrides(["recipe=paper-sudoku", "arch.mlp_t=true"])
    assert check_cli_overrides(["+recipe=paper-sudoku"]) == ["recipe=paper-sudoku"]  # Hydra refuses the `+`


@pytest.mark.parametrize(
    ("arg", "expect"),
    [
        ("recipe=trm-sudok", "unknown recipe 'trm-sudok' (did you mean: trm-sudoku"),
        (
            "recipe=nope",
            "unknown recipe 'nope'; available: paper-sudoku, speedrun-hrm, speedrun-hrm-b384, speedrun-trm, trm-sudoku (config/recipe/)",
        ),
        ("arch=hrm_v2", "unknown arch 'hrm_v2' (did you mean: hrm_v1"),
    ],
)
def test_unknown_recipe_or_arch_is_one_line(tmp_path: Path, arg: str, expect: str) -> None:
    r = run_py(["pretrain.py", arg, f"data_path={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and expect in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_recipes_arch_keys_under_another_arch_name_the_recipe(tmp_path: Path) -> None:
    r = run_py(
        ["pretrain.py", "recipe=trm-sudoku", "arch=hrm_v1", f"data_path={tmp_path}", f"hydra.run.dir={tmp_path}"]
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "recipe=trm-sudoku sets arch.mlp_t" in r.stderr and "the recipe is for arch=trm" in r.stderr


# A recipe run cut down to seconds on the CPU: every key below overrides the recipe's
TINY = ["epochs=4", "eval_interval=2", "global_batch_size=32", "lr_warmup_steps=2", "checkpoint_minutes=null"]
TINY += ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2"]
TINY += ["arch.halt_max_steps=2", "arch.puzzle_emb_len=2", "compile=false", "device=cpu"]


@pytest.mark.slow
def test_run_started_with_a_recipe_saves_it_evaluates_and_resumes(tiny_sudoku: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args = ["pretrain.py", "recipe=trm-sudoku", f"data_path={tiny_sudoku}", "project_name=p", *TINY]
    r = run_py(args, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = (work / "checkpoints" / "p").iterdir()
    assert run_dir.name.startswith("trm-sudoku-")  # named after the recipe
    saved = yaml.safe_load((run_dir / "all_config.yaml").read_text())
    assert saved["recipe"] == "trm-sudoku" and saved["ema"] is True and saved["weight_decay"] == 1.0
    assert saved["arch"]["mlp_t"] is True and saved["arch"]["L_layers"] == 1  # the recipe, then the command line
    assert any("all/exact_accuracy" in m and "elapsed_s" in m for m in read_metrics(run_dir))

    steps = sorted(int(p.name.split("_")[1]) for p in run_dir.glob("step_*") if p.name.split("_")[1].isdigit())
    ev = run_py(["evaluate.py", f"checkpoint={run_dir / f'step_{steps[-1]}'}", "device=cpu", "save_outputs=[]"])
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert f"config: {run_dir / 'all_config.yaml'}" in ev.stdout  # the recipe's values, read back
    assert "(the weight average" in ev.stdout and "all: " in ev.stdout  # the recipe's ema=true wrote step_N.ema

    again = run_py([*args, f"run_name={run_dir.name}", "resume=auto"], cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is already finished" in again.stdout  # resume=auto found the run's config equal to the recipe's


# ---------------------------------------------------------------------------------------------- Make targets
def make_n(*args: str) -> list[list[str]]:
    """The commands `make` would run (-B: as if nothing were built yet), as shell words; nothing is run."""
    r = subprocess.run(["make", "-n", "-B", "-s", "-C", str(REPO), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in r.stdout.splitlines() if line.strip() and not line.startswith("make")]


def opt(words: list[str], key: str) -> str:
    return next(w.split("=", 1)[1] for w in words if w.startswith(key + "="))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(
    ("target", "recipe", "data"),
    [
        (["record-paper-v2"], "paper-sudoku", "data/sudoku-mix-v2-1k-aug-1000"),
        (["record-trm-v2"], "trm-sudoku", "data/sudoku-mix-v2-1k-aug-1000"),
        (["record", "RECIPE=trm-sudoku", "DATA=v1"], "trm-sudoku", "data/sudoku-mix-1k-aug-1000"),
    ],
)
def test_record_targets_build_the_data_and_run_a_real_recipe(target: list[str], recipe: str, data: str) -> None:
    cmds = make_n(*target)
    build = next(c for c in cmds if "dataset/build_sudoku_dataset.py" in c)
    assert (REPO / build[1]).is_file() and build[build.index("--output-dir") + 1] == data
    assert ("--mix-version" in build) == ("-v2-" not in data)  # v1 is built with --mix-version 1
    train = next(c for c in cmds if "pretrain.py" in c)
    i = train.index("pretrain.py")
    assert train[:2] == ["timeout", "--foreground"] and (REPO / train[i]).is_file()
    assert opt(train, "recipe") == recipe and (REPO / "config" / "recipe" / f"{recipe}.yaml").is_file()
    assert opt(train, "data_path") == data
    check_cli_overrides(train[i + 1 : train.index(";")] if ";" in train else train[i + 1 :])  # keys that exist
    table = next(c for c in cmds if "bench/records_table.py" in c)
    assert (REPO / table[1]).is_file() and table[-1] == opt(train, "checkpoint_path")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_peers_target_names_real_scripts() -> None:
    cmds = make_n("peers")
    peers = next(c for c in cmds if "bench/peers.py" in c)
    assert (REPO / peers[1]).is_file() and peers[peers.index("--data") + 1] == "data/sudoku-mix-v2-1k-aug-1000"
    table = next(c for c in cmds if "bench/records_table.py" in c)
    out = peers[peers.index("--out") + 1]
    assert table[-2:] == [f"{out}/hrm-original", f"{out}/trm-original"]
