"""TRM (models/recursive_reasoning/) against fixtures TRM's own code produced (tests/fixtures/trm/README.md):
same weights and inputs give the same logits, Q values, halting, loss, metrics and gradients; TRM's
checkpoints and all_config.yaml evaluate through evaluate.py; our trainer trains, micro-batches and resumes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import models.layers as layers
from models.attention import select_attention_backend
from models.losses import ACTLossHead
from pretrain import check_cli_overrides
from tests.conftest import REPO, WALL_CLOCK_KEYS, read_metrics, run_py
from train.functions import load_model_class
from train.weights import load_checkpoint
from utils.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "trm"
ARCH = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
VARIANTS = ["att_rope", "mlp_t_none", "att_learned", "singlez", "hier6"]
OUTPUT_KEYS = ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue", "preds")

# TRM's arch made tiny: trains a few steps in seconds on 2 CPU cores
TINY_TRM = [
    "arch=trm",
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.L_layers=1",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=2",
    "arch.puzzle_emb_len=2",
]


# Relative error allowed against TRM's fixtures (fp32, CPU). The fixtures were made on one CPU; another vector ISA
# (AVX2 against AVX-512: different matmul and erfinv kernels) sums in another order, which after three segments of
# 21 recursions moves logits by up to ~2e-5 relative (measured on an AVX-512 machine). A wrong formula moves them
# by 1e-2 or more.
FIXTURE_RTOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def build(variant: str) -> tuple[ACTLossHead, dict]:
    select_attention_backend("sdpa", torch.device("cpu"), torch.float32)
    ref = torch.load(FIX / f"model_{variant}.pt", weights_only=True)
    arch = ref["arch_config"]
    model = ACTLossHead(load_model_class(arch["name"])(ref["model_config"]), arch["loss"]["loss_type"])
    model.load_state_dict(ref["state"], strict=True)
    return model, ref


def run_segment(model: ACTLossHead, carry, batch: dict) -> tuple:
    carry, loss, metrics, preds, all_finish = model(carry=carry, batch=batch, return_keys=list(OUTPUT_KEYS))
    preds["preds"] = preds["logits"].argmax(-1)  # TRM's loss head also returns the argmax; ours leaves it out
    rec = {**preds, "halted": carry.halted, "steps": carry.steps, "loss": loss, "metrics": metrics}
    return carry, rec | {"all_finish": bool(all_finish), "current_data": carry.current_data}


def check_segment(ours: dict, theirs: dict, where: str, worst: dict[str, float]) -> None:
    assert set(k for k in OUTPUT_KEYS if k in theirs) == set(k for k in OUTPUT_KEYS if k in ours), where
    for k in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue", "loss"):
        if k in theirs:
            err = rel_err(ours[k], theirs[k])
            worst[k] = max(worst.get(k, 0.0), err)
            assert err < FIXTURE_RTOL, (where, k, err)
    for k in ("halted", "steps", "preds"):
        assert torch.equal(ours[k], theirs[k]), (where, k)
    assert ours["all_finish"] == theirs["all_finish"], where
    for k, v in theirs["current_data"].items():
        assert torch.equal(ours["current_data"][k], v), (where, k)
    assert set(ours["metrics"]) == set(theirs["metrics"]), where
    for k, v in theirs["metrics"].items():
        assert abs(float(ours["metrics"][k]) - float(v)) <= FIXTURE_RTOL * max(1.0, abs(float(v))), (where, k)


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_segments_match_trm(variant: str) -> None:
    model, ref = build(variant)
    model.eval()
    worst: dict[str, float] = {}
    with torch.no_grad():
        carry = model.initial_carry(ref["batch"])
        for i, theirs in enumerate(ref["eval_segments"]):
            carry, ours = run_segment(model, carry, ref["batch"])
            check_segment(ours, theirs, f"eval segment {i}", worst)
    print(variant, "eval max rel err", worst)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_whole_segment_traces_as_one_graph(variant: str) -> None:
    """Dynamo traces a training segment (forward and backward) and an eval segment without a graph break
    (fullgraph raises on one): a break splits the compiled step into pieces that Inductor cannot fuse across.
    One did, in reset_carry (dataclasses.fields of the carry's class), costing every compiled TRM step."""
    torch._dynamo.reset()  # each variant from a clean cache: five models through the same code would hit its limit
    model, ref = build(variant)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    carry = model.initial_carry(ref["batch"])
    model.train()
    carry, loss, _, _, _ = compiled(carry=carry, batch=ref["batch"], return_keys=[])
    loss.backward()
    model.eval()
    with torch.no_grad():
        carry, _, _, out, _ = compiled(carry=model.initial_carry(ref["batch"]), batch=ref["batch"], return_keys=[])
    assert torch.isfinite(loss)


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_segments_and_gradients_match_trm(variant: str) -> None:
    model, ref = build(variant)
    model.train()
    emb = model.model.puzzle_emb  # type: ignore[union-attr]
    carry = model.initial_carry(ref["train_batches"][0])
    torch.manual_seed(ref["meta"]["train_seed"])  # exploration draws in TRM's order
    worst: dict[str, float] = {}
    halts = []
    for i, (batch, theirs) in enumerate(zip(ref["train_batches"], ref["train_segments"], strict=True)):
        model.zero_grad(set_to_none=True)
        emb.local_weights.grad = None
        carry, ours = run_segment(model, carry, batch)
        check_segment(ours, theirs, f"train segment {i}", worst)
        halts.append(ours["halted"])
        if "grads" in theirs:
            ours["loss"].backward()
            grads = {n: p.grad for n, p in model.named_parameters()}
            assert set(grads) == set(theirs["grads"])
            for name, g in theirs["grads"].items():
                err = rel_err(grads[name], g)
                worst["grad"] = max(worst.get("grad", 0.0), err)
                assert err < FIXTURE_RTOL, (i, name, err)
            err = rel_err(emb.local_weights.grad, theirs["puzzle_emb_local_weights_grad"])
            worst["puzzle_emb_grad"] = max(worst.get("puzzle_emb_grad", 0.0), err)
            assert err < FIXTURE_RTOL, (i, err)
    # the fixture exercises halting both ways (Q_halt > 0, exploration, the step limit)
    assert any(h.any() for h in halts[:-1]) and not all(h.all() for h in halts)
    print(variant, "train max rel err", worst)


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_init_equals_trm_init(variant: str) -> None:
    """Modules are built in TRM's order: one seed gives TRM's initial weights."""
    ref = torch.load(FIX / f"model_{variant}.pt", weights_only=True)
    torch.manual_seed(ref["meta"]["init_seed"])
    arch = ref["arch_config"]
    model = ACTLossHead(load_model_class(arch["name"])(ref["model_config"]), arch["loss"]["loss_type"])
    want = ref["state"] | ref["init_state"]
    got = model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        # Same draws in the same order: equal up to the last bit of the CPU's vectorised erfinv (see FIXTURE_RTOL);
        # one module built out of order gives entirely different values.
        torch.testing.assert_close(got[k], want[k], rtol=2**-22, atol=0, msg=k)


def test_mlp_t_swiglu_across_97_positions_stays_off_the_fused_kernel(monkeypatch) -> None:
    """The fused kernel needs K % 16 == 0: mlp_t over 81 + 16 positions must take the plain path, the
    channel SwiGLU (K = hidden_size) the fused one."""
    seen: list[int] = []

    def fake_kernel(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[-1])
        if x.shape[-1] % 16:
            raise ValueError("K must be a multiple of 16")
        gate, up = torch.nn.functional.linear(x, w).chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up

    cls = load_model_class("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1")
    cfg = dict(batch_size=2, seq_len=81, num_puzzle_identifiers=1, vocab_size=11, H_cycles=1, L_cycles=1)
    cfg |= dict(L_layers=1, hidden_size=32, expansion=4, num_heads=2, pos_encodings="none", mlp_t=True)
    cfg |= dict(puzzle_emb_ndim=32, halt_max_steps=1, halt_exploration_prob=0.0, forward_dtype="float32")
    model = cls(cfg).eval()
    batch = {"inputs": torch.ones(2, 81, dtype=torch.int32), "puzzle_identifiers": torch.zeros(2, dtype=torch.int32)}
    batch["labels"] = batch["inputs"]
    with torch.no_grad():
        want = model(model.initial_carry(batch), batch)[1]["logits"]
        monkeypatch.setattr(layers, "_swiglu_gate_up", fake_kernel)
        got = model(model.initial_carry(batch), batch)[1]["logits"]
    assert seen and set(seen) == {32}
    torch.testing.assert_close(got, want)


def test_bad_trm_settings_are_one_line_errors() -> None:
    cls = load_model_class("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1")
    cfg = dict(batch_size=2, seq_len=8, num_puzzle_identifiers=1, vocab_size=11, H_cycles=1, L_cycles=1)
    cfg |= dict(L_layers=1, hidden_size=16, expansion=4, num_heads=2, pos_encodings="rope", puzzle_emb_ndim=16)
    cfg |= dict(halt_max_steps=2, halt_exploration_prob=0.1, forward_dtype="float32")
    cls(cfg)
    for bad, words in (
        (dict(H_layers=4), "H_layers=4 is an HRM setting"),
        (dict(pos_encodings="alibi"), "'rope', 'learned' or 'none'"),
        (dict(puzzle_emb_ndim=0), "set puzzle_emb_len=0"),
        (dict(puzzle_emb_ndim=64, puzzle_emb_len=2), "cannot hold puzzle_emb_ndim=64"),
    ):
        with pytest.raises(ValueError, match=words):
            cls(cfg | bad)
    hier6 = load_model_class("recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1")
    with pytest.raises(ValueError, match="L_cycles must be <= 6"):
        hier6(cfg | dict(L_cycles=7))


def test_act_continue_rule_when_asked() -> None:
    """no_ACT_continue=false (TRM's code fails on it) halts on Q_halt > Q_continue and learns the HRM target."""
    model, ref = build("att_rope")
    model.model.config.no_ACT_continue = False  # type: ignore[union-attr]
    model.model.config.halt_exploration_prob = 0.0  # type: ignore[union-attr]
    model.train()
    batch = ref["batch"]
    with torch.no_grad():
        carry, loss, metrics, out, _ = model(
            carry=model.initial_carry(batch), batch=batch, return_keys=list(OUTPUT_KEYS)
        )
    assert torch.equal(carry.halted, out["q_halt_logits"] > out["q_continue_logits"])
    assert "target_q_continue" in out and "q_continue_loss" in metrics
    assert loss == pytest.approx(
        float(metrics["lm_loss"] + 0.5 * (metrics["q_halt_loss"] + metrics["q_continue_loss"]))
    )


# ---------------------------------------------------------------------------------------------- config keys
def test_arch_keys_are_checked_against_the_chosen_arch() -> None:
    assert check_cli_overrides(["arch=trm", "arch.mlp_t=true", "+arch.puzzle_emb_len=4"]) == [
        "arch=trm",
        "arch.mlp_t=true",
        "arch.puzzle_emb_len=4",
    ]
    with pytest.raises(UserError, match=r"arch.mlp_t is not a setting of arch=hrm_v1, it belongs to arch=trm"):
        check_cli_overrides(["arch.mlp_t=true"])
    with pytest.raises(UserError, match=r"unknown config key 'arch.L_cycle'.*arch.L_cycles"):
        check_cli_overrides(["arch=trm", "arch.L_cycle=2"])


def test_hrm_only_key_with_trm_names_key_and_arch(tiny_sudoku: Path, tmp_path: Path) -> None:
    args = [f"data_path={tiny_sudoku}", f"checkpoint_path={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    r = run_py(["pretrain.py", *args, *TINY_TRM, "arch.H_layers=2"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "H_layers=2 is an HRM setting" in r.stderr


# ---------------------------------------------------------------------------------------------- checkpoints
def test_trm_checkpoint_with_and_without_orig_mod_loads_identically() -> None:
    raw = torch.load(FIX / "ckpt" / "step_10", weights_only=True)
    assert all(k.startswith("_orig_mod.") for k in raw)  # TRM compiles: that is what its step_N holds
    states = []
    for name in ("step_10", "step_10_uncompiled"):
        cfg = torch.load(FIX / "model_att_rope.pt", weights_only=True)["model_config"]
        cfg |= dict(seq_len=81, num_puzzle_identifiers=1, hidden_size=16, puzzle_emb_ndim=16, puzzle_emb_len=16)
        model = ACTLossHead(load_model_class(ARCH)(cfg | dict(L_layers=1)), "stablemax_cross_entropy")
        load_checkpoint(str(FIX / "ckpt" / name), model, "sudoku-tiny")
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert torch.equal(states[0]["model.inner.q_head.weight"], raw["_orig_mod.model.inner.q_head.weight"])


@pytest.mark.slow
def test_evaluate_reads_trm_checkpoint_and_its_all_config(tmp_path: Path) -> None:
    run = tmp_path / "ckpt"
    shutil.copytree(FIX / "ckpt", run)
    ref = torch.load(FIX / "ckpt_eval.pt", weights_only=True)
    for name in ("step_10", "step_10_uncompiled"):
        r = run_py(["evaluate.py", f"checkpoint={run / name}", "device=cpu"], cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        line = next(x for x in r.stdout.splitlines() if x.startswith("all: "))
        got = dict(kv.split("=") for kv in line.removeprefix("all: ").split(", "))
        halting_aware = {"exact_accuracy_at_halt", "accuracy_at_halt", "steps_at_halt"}  # ours, beside TRM's
        verifier = {"valid_solution", "valid_not_label"}  # ours too: the share of valid Sudoku answers
        assert set(got) == set(ref["metrics"]["all"]) | halting_aware | verifier
        for k, v in ref["metrics"]["all"].items():
            assert float(got[k]) == pytest.approx(v, abs=1e-4), k
        step = 10
        preds = torch.load(run / f"step_{step}_all_preds.0", weights_only=True)
        (theirs,) = ref["test_batches"]
        n = theirs["effective_batch_size"]  # we save real rows only; TRM also saved the padding
        assert len(preds["logits"]) == n
        for k in ("logits", "q_halt_logits", "q_continue_logits"):
            assert rel_err(preds[k], theirs[k][:n]) < FIXTURE_RTOL, k
        for k in ("inputs", "labels", "puzzle_identifiers"):
            assert torch.equal(preds[k], theirs[k][:n]), k


@pytest.mark.slow
def test_trm_config_with_several_data_paths_asks_for_one(tmp_path: Path) -> None:
    run = tmp_path / "ckpt"
    shutil.copytree(FIX / "ckpt", run)
    cfg = (run / "all_config.yaml").read_text()
    (run / "all_config.yaml").write_text(cfg.replace("data_paths:\n", "data_paths:\n- data/other\n"))
    r = run_py(["evaluate.py", f"checkpoint={run / 'step_10'}", "device=cpu"], cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "give data_path=" in r.stderr


# ---------------------------------------------------------------------------------------------- trainer
SHORT = ["epochs=4", "eval_interval=2", "global_batch_size=32", "lr=1e-3", "lr_warmup_steps=2"]
SHORT += ["checkpoint_minutes=null", "arch.halt_exploration_prob=0", "compile=false", "seed=1", *TINY_TRM]


def train(data: Path, run_dir: Path, *extra: str) -> None:
    hydra_dir = f"hydra.run.dir={run_dir.parent / 'hydra'}"  # Hydra's outputs/ folder, kept out of the checkout
    r = run_py(["pretrain.py", f"data_path={data}", f"checkpoint_path={run_dir}", hydra_dir, *SHORT, *extra])
    assert r.returncode == 0, r.stderr[-3000:]


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    steps = sorted(int(p.name.split("_")[1]) for p in run_dir.glob("step_*") if p.name.split("_")[1].isdigit())
    return torch.load(run_dir / f"step_{steps[-1]}", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["arch.mlp_t=true", "arch.pos_encodings=none"]], ids=["attention", "mlp_t"])
def test_trainer_trains_trm_micro_batches_and_evaluates(tiny_sudoku: Path, tmp_path: Path, extra: list[str]) -> None:
    train(tiny_sudoku, tmp_path / "big", *extra)
    train(tiny_sudoku, tmp_path / "micro", *extra, "micro_batch_size=8")
    big, micro = read_metrics(tmp_path / "big"), read_metrics(tmp_path / "micro")
    assert [r["step"] for r in big] == [r["step"] for r in micro] and len(big) >= 8
    losses = [r["train/lm_loss"] for r in big if "train/lm_loss" in r]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    for a, b in zip(big, micro, strict=True):
        for k, v in a.items():
            if k not in WALL_CLOCK_KEYS and isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-5), (a["step"], k)
    w_big, w_micro = last_weights(tmp_path / "big"), last_weights(tmp_path / "micro")
    assert any(k.endswith("L_level.layers.0.mlp_t.gate_up_proj.weight") for k in w_big) == bool(extra)
    for k in w_big:
        torch.testing.assert_close(w_big[k], w_micro[k], rtol=1e-4, atol=1e-5)
    # evaluate.py reads our TRM run back
    r = run_py(["evaluate.py", f"checkpoint={tmp_path / 'big' / 'step_8'}"])
    assert r.returncode == 0 and "all: " in r.stdout, r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe",
    [[], ["depth_curriculum=[[0.5,1,1]]", "segments_curriculum=[[0.25,1]]", "halt_on_exact=true"]],
    ids=["paper", "curricula"],  # the curricula's stages follow the step, so a resume trains each step as before
)
def test_trm_resume_is_bit_identical(tiny_sudoku: Path, tmp_path: Path, recipe: list[str]) -> None:
    """A run resumed from its full-state checkpoint at step 3 (mid-pass: ACT carries, RNG, optimizers, data
    position restored) ends with the uninterrupted run's weights, bit for bit."""
    ref = tmp_path / "ref"
    train(tiny_sudoku, ref, "checkpoint_interval=3", "keep_last=0", *recipe)
    assert (ref / "step_3.state").is_file()
    run_dir = tmp_path / "run"
    train(tiny_sudoku, run_dir, f"resume={ref / 'step_3'}", *recipe)
    assert min(r["step"] for r in read_metrics(run_dir)) == 4  # trained from step 3 on, not from scratch
    a, b = last_weights(run_dir), last_weights(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
