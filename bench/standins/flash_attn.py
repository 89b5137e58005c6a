"""CPU/GPU stand-in for FlashAttention's ``flash_attn_func`` (NOT the real package).

Only the call the original HRM code makes is provided:
    flash_attn_func(q, k, v, causal=False) with q, k, v of shape (B, S, H, D)
It returns a contiguous (B, S, H, D) tensor, computed with
torch.nn.functional.scaled_dot_product_attention (default scale 1/sqrt(D), as FlashAttention).
"""

import torch.nn.functional as F


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        dropout_p=dropout_p,
        is_causal=causal,
        scale=softmax_scale,
    )
    return out.transpose(1, 2).contiguous()
