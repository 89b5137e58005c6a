from __future__ import annotations

import math

import torch


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Truncated normal whose *actual* std is `std` (JAX/Flax semantics).

    torch.nn.init.trunc_normal_ truncates a normal of the given std, so the result has a smaller std.
    Here the pre-truncation std is scaled up by the truncated distribution's std ratio. Sampled by
    inverse CDF on [erf(lower/sqrt2), erf(upper/sqrt2)], which is what HRM's weights were drawn with.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_lo, pdf_hi = c * math.exp(-0.5 * lower**2), c * math.exp(-0.5 * upper**2)
        var_ratio = 1 - (upper * pdf_lo - lower * pdf_hi) / z - ((pdf_lo - pdf_hi) / z) ** 2
        comp_std = std / math.sqrt(var_ratio)

        tensor.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std)
        tensor.clip_(lower * comp_std, upper * comp_std)
    return tensor
