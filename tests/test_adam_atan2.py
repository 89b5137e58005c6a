"""AdamATan2 against an independent float64 reference of its update (the adam-atan2 package's rule, as the original
trains with): p *= 1 - lr*wd; m, v moved towards g, g*g; p -= lr/(1-b1^t) * atan2(m, sqrt(v)/sqrt(1-b2^t))."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from adam_atan2 import AdamATan2


def reference_run(
    p0: list[torch.Tensor], grads: list[list[torch.Tensor]], lrs: list[float], betas, wd
) -> list[torch.Tensor]:
    """Plain float64 loop, written from the formula, element by element in math (not torch ops)."""
    b1, b2 = betas
    ps = [p.double().clone() for p in p0]
    ms = [torch.zeros_like(p) for p in ps]
    vs = [torch.zeros_like(p) for p in ps]
    for t, (gs, lr) in enumerate(zip(grads, lrs), start=1):
        for i, g in enumerate(gs):
            g = g.double()
            ps[i] = ps[i] * (1 - lr * wd)
            ms[i] = ms[i] + (g - ms[i]) * (1 - b1)
            vs[i] = vs[i] + (g * g - vs[i]) * (1 - b2)
            flat_m, flat_v = ms[i].flatten().tolist(), vs[i].flatten().tolist()
            upd = [math.atan2(m, math.sqrt(v) / math.sqrt(1 - b2**t)) for m, v in zip(flat_m, flat_v)]
            ps[i] = ps[i] - lr / (1 - b1**t) * torch.tensor(upd, dtype=torch.float64).view_as(ps[i])
    return ps


def make_problem(seed: int, steps: int, shapes=((7, 5), (13,), (3, 4, 2))):
    g = torch.Generator().manual_seed(seed)
    p0 = [torch.randn(s, generator=g) for s in shapes]
    grads = [
        [torch.randn(s, generator=g) * (10 ** torch.randint(-4, 2, (1,), generator=g).item()) for s in shapes]
        for _ in range(steps)
    ]
    # exact zeros exercise atan2(0, 0) and atan2(m, 0)
    grads[0][1][:3] = 0
    lrs = [0.0] + [1e-3 * (1 + (k % 7)) for k in range(steps - 1)]  # lr 0 at the first step, then a schedule
    return p0, grads, lrs


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_float64_reference_over_120_steps(foreach: bool) -> None:
    betas, wd, steps = (0.9, 0.95), 0.1, 120
    p0, grads, lrs = make_problem(0, steps)
    params = [torch.nn.Parameter(p.clone()) for p in p0]
    opt = AdamATan2(params, lr=0, betas=betas, weight_decay=wd, foreach=foreach)
    for gs, lr in zip(grads, lrs):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    ref = reference_run(p0, grads, lrs, betas, wd)
    for p, r in zip(params, ref):
        rel = ((p.detach().double() - r).norm() / r.norm()).item()  # fp32 rounding over 120 steps
        assert rel < 1e-6, rel
    # the parameters really moved
    assert max((p.detach() - q).abs().max().item() for p, q in zip(params, p0)) > 1e-2


def test_foreach_equals_single_tensor_path() -> None:
    p0, grads, lrs = make_problem(1, 20)
    results = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(p.clone()) for p in p0]
        opt = AdamATan2(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=1.0, foreach=foreach)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-7)


def test_constructor_state_dict_and_lr_forms() -> None:
    p = torch.nn.Parameter(torch.ones(4))
    opt = AdamATan2([p], lr=0)  # lr 0 must be accepted (the schedule sets it)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["weight_decay"] == 1e-2
    p.grad = torch.full((4,), 0.5)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.ones(4))  # lr 0: no change at all
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and sd["state"][0]["step"].item() == 1

    # a tensor lr works and matches the float lr
    q1, q2 = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    o1, o2 = AdamATan2([q1], lr=1e-2, foreach=True), AdamATan2([q2], lr=torch.tensor(1e-2), foreach=True)
    for q, o in ((q1, o1), (q2, o2)):
        q.grad = torch.arange(4.0)
        o.step()
    torch.testing.assert_close(q1.detach(), q2.detach())

    # load_state_dict round trip continues identically
    r = torch.nn.Parameter(torch.ones(4))
    o3 = AdamATan2([r], lr=1e-2)
    o3.load_state_dict(copy.deepcopy(o1.state_dict()))  # deep copy: load_state_dict may alias tensors
    r.data.copy_(q1.data)
    for q, o in ((q1, o1), (r, o3)):
        q.grad = torch.ones(4)
        o.step()
    torch.testing.assert_close(q1.detach(), r.detach())

    with pytest.raises(ValueError):
        AdamATan2([p], lr=-1.0)


def test_bf16_params_follow_fp32_within_bf16_rounding() -> None:
    p0, grads, _ = make_problem(2, 30)
    outs = []
    for dtype in (torch.float32, torch.bfloat16):
        # small weights so bf16's spacing is well under one update; then only the update math is compared
        params = [torch.nn.Parameter((p * 0.02).to(dtype)) for p in p0]
        # no weight decay: p * (1 - 1e-3) rounds back to p in bf16 for |p| ~ 1, a property of bf16 storage
        opt = AdamATan2(params, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, foreach=True)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone().to(dtype)
            opt.step()
        assert all(p.dtype == dtype and opt.state[p]["exp_avg"].dtype == dtype for p in params)
        outs.append([p.detach().float() for p in params])
    for a, b, p in zip(*outs, [p * 0.02 for p in p0]):
        # bf16 rounds each update (ulp ~ lr here), so compare the error to the distance travelled
        assert ((b - a).norm() / (a - p).norm()).item() < 0.05


@pytest.mark.parametrize("foreach", [False, True])
def test_device_side_skip_is_a_no_op_and_otherwise_bitwise_the_plain_step(foreach: bool) -> None:
    """`step(skip=flag)`: flag False gives exactly `step()`; flag True (with NaN grads) changes nothing, and after
    `uncount_step()` the run continues exactly as if the skipped step had never been called."""
    p0, grads, lrs = make_problem(2, 12)
    bad = 5  # this step's gradients hold NaN and inf

    def run(mode: str) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(p.clone()) for p in p0]
        opt = AdamATan2(params, lr=0, betas=(0.9, 0.95), weight_decay=0.1, foreach=foreach)
        for k, (gs, lr) in enumerate(zip(grads, lrs)):
            for p, g in zip(params, gs):
                p.grad = g.clone()
                if k == bad:
                    p.grad.view(-1)[0] = float("nan")
                    p.grad.view(-1)[-1] = float("inf")
            for group in opt.param_groups:
                group["lr"] = lr
            if mode == "host":  # the synchronous guard: a bad step is never handed to the optimizer
                if k != bad:
                    opt.step()
            else:
                before = [p.detach().clone() for p in params]
                opt.step(skip=torch.tensor(k == bad))
                if k == bad:
                    assert all(torch.equal(a, b) for a, b in zip(before, params))
                    opt.uncount_step()
        return [p.detach().clone() for p in params]

    host, device = run("host"), run("device")
    assert all(torch.equal(a, b) for a, b in zip(host, device))
    assert all(torch.isfinite(p).all() for p in device)
