"""The stand-ins we give the original code (bench/standins) compute what the packages they replace compute."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from adam_atan2 import AdamATan2
from models.attention import attention, select_attention_backend
from tests.conftest import REPO, load_script, run_py


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"standin_{name}", REPO / "bench" / "standins" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adam_atan2_standin_matches_ours() -> None:
    standin = load("adam_atan2")
    torch.manual_seed(0)
    a = [torch.randn(7, 5, requires_grad=True), torch.randn(11, requires_grad=True)]
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_a = AdamATan2(a, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    opt_b = standin.AdamATan2(b, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for step in range(30):
        g = [torch.randn_like(p) * (0.0 if step == 3 else 1.0) for p in a]  # a zero gradient step included
        for params, opt in ((a, opt_a), (b, opt_b)):
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_flash_attn_standin_matches_our_attention() -> None:
    standin = load("flash_attn")
    select_attention_backend("sdpa", torch.device("cpu"), torch.float32)
    q, k, v = torch.randn(3, 2, 9, 4, 8).unbind(0)  # (B, S, H, D)
    for causal in (False, True):
        torch.testing.assert_close(standin.flash_attn_func(q, k, v, causal=causal), attention(q, k, v, causal))


# ---------------------------------------------------------------------------------------------- the peers (bench/peers.py)
def test_wandb_standin_stamps_wall_time(tmp_path, monkeypatch) -> None:
    out = tmp_path / "m.jsonl"
    monkeypatch.setenv("HRM_METRICS_JSONL", str(out))
    monkeypatch.setenv("HRM_CLOCK_START", repr(time.time() - 100.0))  # the command started 100 s ago
    monkeypatch.setitem(sys.modules, "wandb", None)  # restored after the test: the stand-in replaces it
    runner = load("run_original")
    runner.install_wandb_stub()
    wandb = sys.modules["wandb"]
    wandb.init(project="p")
    wandb.log({"all": {"exact_accuracy": 0.5}}, step=7)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["step"] == 7 and row["all/exact_accuracy"] == 0.5 and 100.0 <= row["elapsed_s"] < 130.0


def peers_module() -> ModuleType:
    return load_script(REPO / "bench" / "peers.py")


def test_peers_get_our_recipes_keys() -> None:
    peers = peers_module()
    paper = "epochs=20000 eval_interval=2000 global_batch_size=768 lr=0.0001 puzzle_emb_lr=0.0001 weight_decay=1.0"
    assert peers.recipe_overrides("paper-sudoku") == [*paper.split(), "puzzle_emb_weight_decay=1.0"]
    # TRM's README flags (pretrain_mlp_t_sudoku), its data_paths / evaluators / +run_name aside
    trm = "arch=trm epochs=50000 eval_interval=5000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 "
    trm += "puzzle_emb_weight_decay=1.0 arch.mlp_t=True arch.pos_encodings=none arch.L_layers=2 "
    trm += "arch.H_cycles=3 arch.L_cycles=6 ema=True"
    readme = {k: v.lower().replace("1e-4", "0.0001") for k, v in (a.split("=") for a in trm.split())}
    got = dict(a.split("=") for a in peers.recipe_overrides("trm-sudoku"))
    assert got == readme


def test_trm_data_view_adds_total_puzzles_and_leaves_the_data_alone(tiny_sudoku, tmp_path) -> None:
    peers = peers_module()
    before = {p: p.read_bytes() for p in tiny_sudoku.rglob("*") if p.is_file()}
    view = peers.trm_data_view(tiny_sudoku, tmp_path / "view")
    for split in ("train", "test"):
        ours = json.loads((tiny_sudoku / split / "dataset.json").read_text())
        theirs = json.loads((view / split / "dataset.json").read_text())
        assert theirs == ours | {"total_puzzles": ours["total_groups"]}
        assert (view / split / "all__inputs.npy").resolve() == (tiny_sudoku / split / "all__inputs.npy").resolve()
    assert {p: p.read_bytes() for p in tiny_sudoku.rglob("*") if p.is_file()} == before
    cmd = peers.peer_command(peers.PEERS["trm"], tiny_sudoku, tmp_path / "run", ["epochs=4"])
    assert f"data_paths=[{tmp_path / 'run' / 'data'}]" in cmd and "evaluators=[]" in cmd
    assert cmd.index("arch.mlp_t=true") < cmd.index("epochs=4")  # --set comes after the recipe: it wins


def test_peers_set_splits_per_peer() -> None:
    peers = peers_module()
    got = peers.split_sets(["eval_interval=1000", "trm:arch.forward_dtype=float32", "orig:data_path=/a:b"])
    assert got == {
        "orig": ["eval_interval=1000", "data_path=/a:b"],
        "trm": ["eval_interval=1000", "arch.forward_dtype=float32"],
    }


@pytest.mark.bad_input
@pytest.mark.parametrize("minutes", ["nan", "inf", "0", "-1"])
def test_peers_refuse_a_time_limit_that_is_not_a_positive_number(tiny_sudoku, tmp_path, capsys, minutes) -> None:
    peers = peers_module()
    (tmp_path / "trm").mkdir()
    (tmp_path / "trm" / "pretrain.py").write_text("")
    with pytest.raises(SystemExit) as e:
        peers.main(["--data", str(tiny_sudoku), "--trm", str(tmp_path / "trm"), "--minutes", minutes])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--minutes must be a positive number" in err, err
    assert not (tmp_path / "trm" / "metrics.jsonl").exists() and not Path("results/peers").exists()


# Real runs of the peers' own code: checkouts given by HRM_ORIG_CHECKOUT / HRM_TRM_CHECKOUT (plain `git clone`s of
# https://github.com/sapientinc/HRM and https://github.com/SamsungSAILMontreal/TinyRecursiveModels), on the CPU.
PEER_TINY = {
    "orig": ["arch.hidden_size=64", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1"],
    "trm": ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.puzzle_emb_len=2"],
}
PEER_TINY_ALL = ["global_batch_size=32", "arch.H_cycles=2", "arch.L_cycles=2", "arch.halt_max_steps=2"]


def peer_checkout(key: str):
    var = {"orig": "HRM_ORIG_CHECKOUT", "trm": "HRM_TRM_CHECKOUT"}[key]
    if not os.environ.get(var):
        pytest.skip(f"needs {var}=<git checkout of the peer's code> (bench/peers.py)")
    return Path(os.environ[var])


def run_peers(key: str, data, out, minutes: float, *sets: str):
    checkout = peer_checkout(key)
    tiny = [f"--set={s}" for s in [*PEER_TINY_ALL, *(f"{key}:{a}" for a in PEER_TINY[key]), *sets]]
    args = ["bench/peers.py", "--data", str(data), f"--{key}", str(checkout), "--minutes", str(minutes)]
    r = run_py([*args, "--out", str(out), *tiny], env={"HRM_DEVICE": "cpu", "DISABLE_COMPILE": "1"}, timeout=900)
    name = peers_module().PEERS[key].name
    assert r.returncode == 0, r.stdout + r.stderr + (out / name / "log.txt").read_text()[-3000:]
    clean = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain"], capture_output=True, text=True)
    assert clean.stdout == ""  # nothing written into the peer's checkout
    info = json.loads((out / name / "run.json").read_text())
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    return info, rows


@pytest.mark.parametrize("key", ["orig", "trm"])
def test_peer_trains_and_logs_wall_times(tiny_sudoku, tmp_path, key: str) -> None:
    info, rows = run_peers(key, tiny_sudoku, tmp_path, 10, "epochs=4", "eval_interval=2")
    assert info["returncode"] == 0 and not info["stopped_at_time_limit"] and len(info["commit"]) == 40
    times = [r["elapsed_s"] for r in rows]
    assert times == sorted(times) and 0 < times[0] < info["wall_s"]
    evals = [r for r in rows if "all/exact_accuracy" in r]
    assert [r["step"] for r in evals] == [4, 8] and any("train/lm_loss" in r for r in rows)
    text = load_script(REPO / "bench" / "records_table.py").table(
        [(key, tmp_path / peers_module().PEERS[key].name)], 25, (0.5,), False
    )
    assert info["recipe"] in text.splitlines()[2]
    # the peer's own model ran, not ours (its checkpoint folder gets a copy of the model file it imported)
    model = {"orig": "models/hrm/hrm_act_v1.py", "trm": "models/recursive_reasoning/trm.py"}[key]
    ckpt = tmp_path / peers_module().PEERS[key].name / "ckpt"
    for f in (model, "models/losses.py"):
        assert (ckpt / Path(f).name).read_bytes() == (peer_checkout(key) / f).read_bytes(), f


def test_peer_is_stopped_at_the_time_limit(tiny_sudoku, tmp_path) -> None:
    info, rows = run_peers("orig", tiny_sudoku, tmp_path, 0.4, "epochs=1000", "eval_interval=1")
    assert info["stopped_at_time_limit"] and 24 <= info["wall_s"] < 24 + 60
    assert rows and max(r["elapsed_s"] for r in rows) <= info["wall_s"]
