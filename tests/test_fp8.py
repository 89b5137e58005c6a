"""nograd_fp8: training's no-gradient forwards as row-scaled e4m3 GEMMs, and nothing else (models/layers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from models import layers
from models.attention import select_attention_backend
from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
from models.losses import ACTLossHead
from tests.test_fast_paths import TINY

CPU = torch.device("cpu")


@pytest.fixture
def fp8_on() -> Iterator[None]:
    assert layers.select_nograd_matmul(True, CPU, torch.float32)
    yield
    layers.select_nograd_matmul(False, CPU, torch.float32)


@pytest.fixture
def scaled_mm_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = torch._scaled_mm

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", counting)
    return calls


def random_batch(rows: int, seq: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return dict(
        inputs=torch.randint(1, vocab, (rows, seq), generator=g, dtype=torch.int32),
        labels=torch.randint(2, vocab, (rows, seq), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.randint(0, 3, (rows,), generator=g, dtype=torch.int32),
    )


def test_fp8_linear_keeps_each_row_to_fp8_precision() -> None:
    g = torch.Generator().manual_seed(0)
    # rows and output channels of very different sizes: one scale for the whole tensor would flush the small
    # rows to zero, a scale per row keeps every row to e4m3's ~3 significant bits
    x = torch.randn(64, 128, generator=g) * torch.logspace(-3, 2, 64).unsqueeze(1)
    w = torch.randn(48, 128, generator=g) * torch.logspace(-2, 1, 48).unsqueeze(1)
    b = torch.randn(48, generator=g)
    exact = F.linear(x, w, b)
    got = layers.fp8_linear(x, w, b)
    rel = (got - exact).norm(dim=1) / (exact - b).norm(dim=1)
    assert rel.max() < 0.1 and rel.min() > 0  # quantized (not exact), yet close in every row
    rel_channel = (got - exact).norm(dim=0) / (exact - b).norm(dim=0)
    assert rel_channel.max() < 0.1
    # 3-d activations come back in their shape
    assert layers.fp8_linear(x.view(4, 16, 128), w, None).shape == (4, 16, 48)


def test_fp8_applies_to_training_no_grad_forwards_only(fp8_on, scaled_mm_calls) -> None:
    lin = layers.CastedLinear(64, 32, bias=False)
    x = torch.randn(2, 8, 64)
    exact = F.linear(x, lin.weight)

    assert torch.equal(lin(x), exact) and scaled_mm_calls[0] == 0  # a forward with gradient
    lin.eval()  # evaluation: eval mode (under inference_mode or no_grad)
    with torch.inference_mode():
        assert torch.equal(lin(x), exact) and scaled_mm_calls[0] == 0
    with torch.no_grad():
        assert torch.equal(lin(x), exact) and scaled_mm_calls[0] == 0
    lin.train()
    with torch.no_grad():  # the no-grad part of a training step
        y = lin(x)
        assert scaled_mm_calls[0] == 1 and not torch.equal(y, exact)
        assert (y - exact).norm() / exact.norm() < 0.1
        # GEMM sizes fp8 kernels do not take (not multiples of 16) stay in the forward dtype
        odd = layers.CastedLinear(97, 32, bias=False)
        x97 = torch.randn(2, 8, 97)
        assert torch.equal(odd(x97), F.linear(x97, odd.weight)) and scaled_mm_calls[0] == 1
        assert torch.equal(lin(x[:, :5]), F.linear(x[:, :5], lin.weight)) and scaled_mm_calls[0] == 1  # 10 rows

    layers.select_nograd_matmul(False, CPU, torch.float32)
    with torch.no_grad():
        assert torch.equal(lin(x), exact) and scaled_mm_calls[0] == 1


def test_fp8_linear_compiles_whole(fp8_on) -> None:
    # Dynamo must trace the choice and the quantization without a graph break (fullgraph raises on one):
    # a break would split every block of the compiled step
    lin = layers.CastedLinear(64, 32, bias=True)
    x = torch.randn(2, 8, 64)
    with torch.no_grad():
        compiled = torch.compile(lin, fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(compiled, layers.fp8_linear(x, lin.weight, lin.bias))
        lin.eval()
        torch.testing.assert_close(
            torch.compile(lin, fullgraph=True, backend="aot_eager")(x), F.linear(x, lin.weight, lin.bias)
        )


@pytest.mark.parametrize("no_act_continue", [True, False])
def test_hrm_step_quantizes_exactly_the_forwards_without_gradient(fp8_on, scaled_mm_calls, no_act_continue) -> None:
    select_attention_backend("sdpa", CPU, torch.float32)
    cfg = TINY | {"batch_size": 8, "no_ACT_continue": no_act_continue}  # 8 rows x (9 + 1) positions: 80 GEMM rows
    torch.manual_seed(0)
    model = HierarchicalReasoningModel_ACTV1(cfg)
    head = ACTLossHead(model, "stablemax_cross_entropy")
    batch = random_batch(8, 9, vocab=5)
    _, loss, *_ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    # a segment of 2 H x 2 L cycles runs 3 f_L and 1 f_H without gradient, each block with 4 linear layers
    # (qkv, o, gate_up, down); the Q-target forward (no_ACT_continue=false) runs all 4 + 2 without gradient.
    # The last f_L and f_H, the LM head and the Q head (gradient, or sizes of 5 and 2) stay in the forward dtype.
    assert scaled_mm_calls[0] == (4 if no_act_continue else 4 + 6) * 4
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    # the step still traces as one graph for torch.compile: the fp8 path adds no break
    explained = torch._dynamo.explain(head)(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    assert explained.graph_break_count == 0, explained.break_reasons

    # the same weights without fp8: the same function, rounded differently
    layers.select_nograd_matmul(False, CPU, torch.float32)
    calls = scaled_mm_calls[0]
    _, loss_exact, *_ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    assert scaled_mm_calls[0] == calls
    assert loss.item() != loss_exact.item()
    assert loss.item() == pytest.approx(loss_exact.item(), rel=0.05)


def test_trm_step_quantizes_its_no_grad_recursions(fp8_on, scaled_mm_calls) -> None:
    from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1

    select_attention_backend("sdpa", CPU, torch.float32)
    cfg = TINY | dict(batch_size=8, seq_len=12, vocab_size=11, puzzle_emb_len=4, expansion=4, H_layers=0)
    cfg |= {"no_ACT_continue": True}  # 8 rows x (12 + 4) positions: 128 GEMM rows
    torch.manual_seed(0)
    head = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(cfg), "stablemax_cross_entropy")
    batch = random_batch(8, 12, vocab=11)
    _, loss, *_ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    # T = 2 recursions of n = 2 latent steps: the first (no_grad) calls the 1-block net n + 1 = 3 times, 4 linear
    # layers each; the last recursion carries gradient and stays in the forward dtype
    assert scaled_mm_calls[0] == 3 * 4
    loss.backward()


def test_fp8_is_refused_where_its_gemms_cannot_run(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(ValueError, match=r"compute capability 8\.9.*A100.* is 8\.0\. Drop nograd_fp8"):
        layers.select_nograd_matmul(True, torch.device("cuda"), torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(ValueError, match="forward dtype bfloat16 on CUDA.*not float32"):
        layers.select_nograd_matmul(True, torch.device("cuda"), torch.float32)
    with monkeypatch.context() as m:  # no GPU here: the gates are what is tested, the probe GEMM is skipped
        m.setattr(layers, "fp8_gemm_failure", lambda device, dtype: "")
        assert "fp8" in layers.select_nograd_matmul(True, torch.device("cuda"), torch.bfloat16)
    with pytest.raises(ValueError, match="not on mps. Drop nograd_fp8"):
        layers.select_nograd_matmul(True, torch.device("mps"), torch.float32)
    assert layers.select_nograd_matmul(False, torch.device("mps"), torch.float32) == ""

    def missing_kernel(*args, **kwargs):
        raise NotImplementedError("Could not run 'aten::_scaled_mm' with arguments from the 'CPU' backend.")

    monkeypatch.setattr(torch, "_scaled_mm", missing_kernel)  # an older torch without fp8 GEMMs on this device
    with pytest.raises(ValueError, match=r"an fp8 GEMM fails on this cpu .*NotImplementedError.*Drop nograd_fp8"):
        layers.select_nograd_matmul(True, CPU, torch.float32)
    assert not layers._nograd_fp8  # a refusal or "off" leaves it off


@pytest.mark.slow
def test_a_run_trains_in_fp8_and_scores_in_its_forward_dtype(tiny_sudoku, tmp_path) -> None:
    from tests.conftest import SHORT_RUN, pretrain_args, read_metrics, run_py

    runs = {}
    for name, extra in (("fp8", ["nograd_fp8=true"]), ("plain", [])):
        r = run_py(pretrain_args(tiny_sudoku, tmp_path / name, [*SHORT_RUN, "arch.halt_max_steps=4"], *extra))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        runs[name] = (r.stdout, read_metrics(tmp_path / name))
    out, metrics = runs["fp8"]
    assert "training's no-grad GEMMs in fp8 e4m3 (nograd_fp8=true)" in out
    assert "nograd_fp8" not in runs["plain"][0]
    loss = [m["train/lm_loss"] for m in metrics if "train/lm_loss" in m]
    plain = [m["train/lm_loss"] for m in runs["plain"][1] if "train/lm_loss" in m]
    assert loss[0] == pytest.approx(plain[0], rel=0.05) and loss != plain  # fp8 ran, close to the exact math
    assert all(v == v for v in loss) and loss[-1] < loss[0]

    # its evals ran in the forward dtype: evaluate.py (no fp8 there) gives the last eval's scores exactly
    last = max(m["step"] for m in metrics)
    evals = [m for m in metrics if "all/accuracy" in m]
    r = run_py(["evaluate.py", f"checkpoint={tmp_path / 'fp8' / f'step_{last}'}", "save_outputs=[]"])
    assert r.returncode == 0, r.stderr
    assert "nograd_fp8" not in r.stdout
    printed = {k: float(r.stdout.split(f"{k}=")[1].split(",")[0]) for k in ("accuracy", "lm_loss")}  # 4 decimals
    assert printed["accuracy"] == pytest.approx(evals[-1]["all/accuracy"], abs=5.1e-5)
    assert printed["lm_loss"] == pytest.approx(evals[-1]["all/lm_loss"], abs=5.1e-5)
