"""utils/ema.py: the weight average TRM evaluates with (ema=true, ema_rate)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from utils.ema import EMA


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer("table", torch.zeros(5))  # like the puzzle-embedding table: not averaged


def perturb(net: Net, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (net.lin.weight, net.lin.bias):
            p.add_(torch.randn(p.shape, generator=g))
        net.table.add_(1.0)


def test_update_is_trms_formula_and_skips_bitwise() -> None:
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, rate=0.9)
    want = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    for step in range(5):
        perturb(net, step)
        ema.update()
        for n, p in net.named_parameters():
            if p.requires_grad:
                want[n] = (1.0 - 0.9) * p.detach() + 0.9 * want[n]  # TRM's EMAHelper.update
    got = ema.state_dict()
    assert set(got) == {"lin.weight", "lin.bias"}  # frozen parameters and buffers are not averaged
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)

    before = [t.clone() for t in ema.shadow]
    perturb(net, 99)
    ema.update(skip=torch.tensor(True))
    assert all(torch.equal(a, b) for a, b in zip(before, ema.shadow))
    ema.update(skip=torch.tensor(False))
    assert not torch.equal(before[0], ema.shadow[0])


def test_swapped_in_evaluates_the_average_and_restores_the_live_weights() -> None:
    torch.manual_seed(0)
    net = Net()
    ema = EMA(net, rate=0.5)
    perturb(net, 1)
    ema.update()
    live = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 4)
    with ema.swapped_in():
        assert torch.equal(net.lin.weight, ema.shadow[0])
        assert torch.equal(net.table, live["table"])  # buffers stay live
        y_avg = net.lin(x)
    assert all(torch.equal(v, live[k]) for k, v in net.state_dict().items())
    assert not torch.allclose(net.lin(x), y_avg)
    w = ema.weights(net)
    assert torch.equal(w["lin.weight"], ema.shadow[0]) and torch.equal(w["table"], live["table"])
    fresh = Net()
    fresh.load_state_dict(w)
    torch.testing.assert_close(fresh.lin(x), y_avg)


def test_state_round_trip_and_bad_rate() -> None:
    net = Net()
    ema = EMA(net, rate=0.99)
    perturb(net, 3)
    ema.update()
    other = EMA(Net(), rate=0.99)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, other.shadow))
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"lin.weight": torch.zeros(3, 4)})
    for rate in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema_rate must be in"):
            EMA(net, rate=rate)
