from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def exception_line(e: BaseException, limit: int = 160) -> str:
    """`Type: first line of its message` (cut to limit), for the one-line reasons the fast-path probes print."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit]}" if text else type(e).__name__


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


class InputEmbedding:
    """The input both recurrent models (HRM, TRM) read: token embeddings, with the puzzle embedding padded to
    `puzzle_emb_len` rows in front, plus learned positions if chosen, times embed_scale (sqrt(hidden)).

    A mixin: the model provides embed_tokens, puzzle_emb, puzzle_emb_len, embed_pos, embed_scale,
    forward_dtype and a config with puzzle_emb_ndim, hidden_size and pos_encodings.
    """

    def _input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        embedding = self.embed_tokens(inputs.to(torch.int32))  # type: ignore[attr-defined]
        config = self.config  # type: ignore[attr-defined]
        if config.puzzle_emb_ndim > 0:
            puzzle_embedding = self.puzzle_emb(puzzle_identifiers)  # type: ignore[attr-defined]
            rows = self.puzzle_emb_len  # type: ignore[attr-defined]
            pad_count = rows * config.hidden_size - puzzle_embedding.shape[-1]
            if pad_count > 0:
                puzzle_embedding = F.pad(puzzle_embedding, (0, pad_count))
            embedding = torch.cat((puzzle_embedding.view(-1, rows, config.hidden_size), embedding), dim=-2)
        if config.pos_encodings == "learned":
            # (e + p) / sqrt(2) keeps the variance of one embedding
            pos = self.embed_pos.embedding_weight.to(self.forward_dtype)  # type: ignore[attr-defined]
            embedding = 0.707106781 * (embedding + pos)
        return self.embed_scale * embedding  # type: ignore[attr-defined]
