"""compile_scope=block (train/runtime.CompileGuard): only the repeated reasoning modules are compiled, in place;
training and evaluation match eager, checkpoint keys stay eager's, and a failed compile really goes eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import CPU, D, run_py, tiny_config
from utils.errors import UserError

TRM = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
HRM = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
# small enough for a CPU compile in seconds; two recursions of two calls, two segments
TINY = dict(
    hidden_size=32,
    num_heads=2,
    L_layers=1,
    H_cycles=2,
    L_cycles=2,
    expansion=2,
    halt_max_steps=2,
    halt_exploration_prob=0.1,
    puzzle_emb_ndim=32,
    pos_encodings="rope",
    forward_dtype="float32",
)
ARCHS = {
    TRM: dict(TINY, H_layers=0, no_ACT_continue=True, puzzle_emb_len=2),
    HRM: dict(TINY, H_layers=1, no_ACT_continue=False),  # HRM's Q-target forward: a third no-grad call pattern
}


def config_for(data: Path, arch_name: str, **overrides):
    arch = {"name": arch_name, "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}}
    return tiny_config(
        data,
        arch=arch | ARCHS[arch_name],
        global_batch_size=16,
        lr=1e-3,
        beta1=0.9,
        beta2=0.95,
        weight_decay=0.1,
        puzzle_emb_lr=1e-2,
        ema=True,
        **overrides,
    )


def test_every_model_names_its_reasoning_modules() -> None:
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1ReasoningModule
    from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1ReasoningModule
    from train.functions import load_model_class

    for name, want in [
        (TRM, ("L_level",)),
        ("recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1", ("L_level",)),
        ("recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1", ("L_level",)),
        (HRM, ("H_level", "L_level")),
    ]:
        assert load_model_class(name).compile_region_names == want, name
    kinds = (HierarchicalReasoningModel_ACTV1ReasoningModule, TinyRecursiveReasoningModel_ACTV1ReasoningModule)
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
    from models.losses import ACTLossHead

    hrm = ACTLossHead(
        HierarchicalReasoningModel_ACTV1(
            ARCHS[HRM] | dict(batch_size=2, seq_len=4, vocab_size=5, num_puzzle_identifiers=1, causal=False)
        ),
        "stablemax_cross_entropy",
    )
    regions = hrm.compile_regions()
    assert [type(r) for r in regions] == [HierarchicalReasoningModel_ACTV1ReasoningModule] * 2 and all(
        isinstance(r, kinds) for r in regions
    )
    assert regions == [hrm.model.inner.H_level, hrm.model.inner.L_level]  # type: ignore[union-attr]


def test_block_scope_is_reported_and_checked(tiny_sudoku: Path) -> None:
    from train.runtime import setup_runtime

    rt = setup_runtime(config_for(tiny_sudoku, HRM, compile=True, device="cpu", compile_scope="block"), D)
    assert dict(rt.report)["compile"] == "on (compile=true); scope block: the reasoning modules only (H_level, L_level)"
    rt = setup_runtime(config_for(tiny_sudoku, TRM, compile=True, device="cpu", compile_scope="block"), D)
    assert dict(rt.report)["compile"].endswith("scope block: the reasoning modules only (L_level)")
    rt = setup_runtime(config_for(tiny_sudoku, TRM, compile=True, device="cpu"), D)  # the default: as before
    assert dict(rt.report)["compile"] == "on (compile=true)"
    off = setup_runtime(config_for(tiny_sudoku, TRM, compile=False, device="cpu", compile_scope="block"), D)
    assert dict(off.report)["compile"] == "off (compile=false)"

    with pytest.raises(UserError, match="compile_scope must be one of model, block; got 'layer'"):
        setup_runtime(config_for(tiny_sudoku, TRM, device="cpu", compile_scope="layer"), D)
    for mode in ("reduce-overhead", "max-autotune"):  # the CUDA-graph modes: refused, naming the way out
        cfg = config_for(tiny_sudoku, TRM, device="cpu", compile_scope="block", compile_mode=mode)
        with pytest.raises(UserError) as e:
            setup_runtime(cfg, D)
        assert str(e.value) == (
            f"compile_scope=block does not take compile_mode={mode} (CUDA graphs); use compile_scope=model, or a "
            "compile_mode without CUDA graphs (null or max-autotune-no-cudagraphs)"
        )
    mode = "max-autotune-no-cudagraphs"  # other modes pass through (create_model reads both keys from the config)
    cfg = config_for(tiny_sudoku, TRM, compile=True, device="cpu", compile_scope="block", compile_mode=mode)
    line = dict(setup_runtime(cfg, D).report)["compile"]
    assert line.startswith(f"on (compile=true; mode {mode}: ") and line.endswith(
        "scope block: the reasoning modules only (L_level)"
    )


@pytest.mark.slow
def test_unknown_scope_stops_with_one_error_line(tiny_sudoku: Path, tmp_path: Path) -> None:
    r = run_py(["pretrain.py", f"data_path={tiny_sudoku}", f"checkpoint_path={tmp_path / 'bad'}", "compile_scope=all"])
    assert r.returncode == 2 and "error: compile_scope must be one of model, block; got 'all'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()


class Toy(nn.Module):
    """A model with one region, the shape of the ACT loss head's contract."""

    def __init__(self) -> None:
        super().__init__()
        self.region = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def compile_regions(self) -> list[nn.Module]:
        return [self.region]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.region(x).relu())


def test_block_fallback_undoes_the_in_place_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    from train.runtime import CompileGuard

    def broken(fn, **kw):  # stands in for a region whose compile fails at its first call
        assert kw == {"dynamic": False, "mode": None}

        def call(*args, **kwargs):
            raise RuntimeError("BackendCompilerFailed: inductor exploded\nlong trace")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model, x, logs = Toy(), torch.randn(4, 3), []
    keys = list(model.state_dict())
    guard = CompileGuard(model, enabled=True, log=logs.append, scope="block")
    assert guard.is_compiled and guard.active is model and model.region._compiled_call_impl is not None
    assert model.head._compiled_call_impl is None  # only the region
    out = guard.run("train", lambda m: m(x))
    torch.testing.assert_close(out, model.head(model.region.forward(x).relu()))
    assert len(logs) == 1 and "torch.compile failed (RuntimeError: BackendCompilerFailed: inductor exploded)" in logs[0]
    assert "continuing eager" in logs[0]
    assert model.region._compiled_call_impl is None and not guard.is_compiled and guard.active is model
    torch.testing.assert_close(guard.run("eval", lambda m: m(x)), out)  # eager from now on, no second message
    assert len(logs) == 1 and list(model.state_dict()) == keys


@pytest.mark.slow
@pytest.mark.parametrize("arch_name", [TRM, HRM], ids=["trm", "hrm"])
def test_block_scope_trains_and_evaluates_as_eager(tiny_sudoku: Path, arch_name: str) -> None:
    """Two training steps (with the EMA) and an evaluation (with the EMA's weights swapped in, as the trainer's)
    give eager's losses, metrics and weights; only the reasoning modules are compiled, and evaluation runs them."""
    import torch._dynamo
    import torch._dynamo.utils as dynamo_utils

    import pretrain
    from train.ema import EMA

    config = config_for(tiny_sudoku, arch_name, compile_scope="block")
    train_loader, meta = pretrain.create_dataloader(
        config, "train", D, CPU, test_set_mode=False, epochs_per_iter=1, global_batch_size=16
    )
    eval_loader, eval_meta = pretrain.create_dataloader(
        config, "test", D, CPU, test_set_mode=True, epochs_per_iter=1, global_batch_size=16
    )
    batches = [b for _, (_, b, _) in zip(range(2), train_loader)]

    def run(compile_on: bool) -> tuple[list[dict], dict, dict[str, torch.Tensor], object]:
        torch._dynamo.reset()
        torch.manual_seed(0)
        model, opts, lrs = pretrain.create_model(
            config, meta, D, CPU, "float32", use_compile=compile_on, log=pytest.fail
        )
        state = pretrain.TrainState(model=model, optimizers=opts, optimizer_lrs=lrs, carry=None, step=0, total_steps=4)
        state.ema = EMA(model.eager, config.ema_rate)
        model.eager.train()
        results = [pretrain.train_batch(config, state, b, 16, D, CPU) for b in batches]
        results = [r for r in [*results, pretrain.finish_step(state)] if r is not None]
        model.eager.eval()
        if compile_on:  # count the compiled regions' calls from here: evaluation must run them too
            calls: list[int] = []
            for region in model.regions:
                inner = region._compiled_call_impl
                region._compiled_call_impl = lambda *a, inner=inner, **k: calls.append(1) or inner(*a, **k)
        with state.ema.swapped_in():
            metrics = pretrain.evaluate(config, state, eval_loader, eval_meta, D, CPU)
        if compile_on:
            assert calls, "evaluation did not run the compiled regions"
        return [r.metrics for r in results], metrics, model.eager.state_dict(), model

    eager_steps, eager_eval, eager_weights, _ = run(False)
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    steps, evals, weights, guard = run(True)
    assert dynamo_utils.counters["stats"]["unique_graphs"] > before  # compiled, not the eager fallback
    assert guard.is_compiled and guard.compiled is guard.eager  # in place: no compiled twin of the whole model
    assert not isinstance(guard.active, torch._dynamo.eval_frame.OptimizedModule)
    regions = guard.eager.compile_regions()
    assert guard.regions == regions and all(r._compiled_call_impl is not None for r in regions)
    region_ids = {id(r) for r in regions}
    others = [m for m in guard.eager.modules() if id(m) not in region_ids]
    assert all(m._compiled_call_impl is None for m in others)  # the rest (embeddings, heads, loss) runs eager
    assert list(weights) == list(eager_weights) and not any("_orig_mod" in k for k in weights)

    assert len(steps) == 2 and [list(s) for s in steps] == [list(s) for s in eager_steps]
    for got, want in zip(steps, eager_steps):
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k
    assert list(evals) == list(eager_eval)
    for s in eager_eval:
        for k in eager_eval[s]:
            assert evals[s][k] == pytest.approx(eager_eval[s][k], rel=1e-4, abs=1e-6), (s, k)
    for k, w in eager_weights.items():
        torch.testing.assert_close(weights[k], w, rtol=1e-4, atol=1e-5)
