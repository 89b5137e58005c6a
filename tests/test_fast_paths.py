"""Speed options and fast paths: what each changes (a recipe option) or provably does not (a fast path)."""

from __future__ import annotations

import torch

from models.attention import select_attention_backend
from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
from models.losses import ACTLossHead
from train.checkpoint import same_arch

TINY = dict(
    batch_size=6,
    seq_len=9,
    puzzle_emb_ndim=16,
    num_puzzle_identifiers=3,
    vocab_size=5,
    H_cycles=2,
    L_cycles=2,
    H_layers=1,
    L_layers=1,
    hidden_size=16,
    expansion=2,
    num_heads=2,
    pos_encodings="rope",
    halt_max_steps=4,
    halt_exploration_prob=0.0,
    forward_dtype="float32",
)


def tiny_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randint(1, 5, (6, 9), generator=g, dtype=torch.int32),
        labels=torch.randint(2, 5, (6, 9), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.randint(0, 3, (6,), generator=g, dtype=torch.int32),
    )


def count_inner_calls(model: HierarchicalReasoningModel_ACTV1) -> list[int]:
    calls = [0]
    model.inner.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_no_act_continue_drops_the_q_target_forward_and_halts_on_q_halt() -> None:
    select_attention_backend("sdpa", torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    base = HierarchicalReasoningModel_ACTV1(TINY)
    torch.manual_seed(0)
    with torch.no_grad():  # a Q head that says "halt" for some rows and "continue" for others
        base.inner.q_head.weight.normal_(0, 1.0)
        base.inner.q_head.bias.copy_(torch.tensor([0.0, 1.5]))
    trm = HierarchicalReasoningModel_ACTV1(TINY | {"no_ACT_continue": True})
    trm.load_state_dict(base.state_dict())
    batch = tiny_batch()
    calls_base, calls_trm = count_inner_calls(base), count_inner_calls(trm)
    base.train(), trm.train()

    carry_b, out_b = base(base.initial_carry(batch), batch)
    carry_t, out_t = trm(trm.initial_carry(batch), batch)
    assert calls_base[0] == 2 and "target_q_continue" in out_b  # segment + Q-target forward
    assert calls_trm[0] == 1 and "target_q_continue" not in out_t  # the segment only
    torch.testing.assert_close(out_t["logits"], out_b["logits"])  # same segment math
    q_halt, q_cont = out_t["q_halt_logits"], out_t["q_continue_logits"]
    assert torch.equal(carry_t.halted, q_halt > 0)  # TRM's rule (no row is at its last step yet)
    assert torch.equal(carry_b.halted, q_halt > q_cont)
    assert not torch.equal(carry_t.halted, carry_b.halted)  # the two rules really differ on this batch

    # The loss has no Q-continue term, and training still runs end to end (gradients reach the Q head).
    head = ACTLossHead(trm, "stablemax_cross_entropy")
    _, loss, metrics, _, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    assert "q_continue_loss" not in metrics
    loss.backward()
    assert trm.inner.q_head.weight.grad is not None and trm.inner.q_head.weight.grad.abs().sum() > 0


def test_checkpoint_from_before_a_new_arch_key_resumes_with_its_default() -> None:
    name = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    saved = {"name": name, "hidden_size": 512}
    assert same_arch(saved, saved | {"no_ACT_continue": False}, name)  # key added later, default value
    assert not same_arch(saved, saved | {"no_ACT_continue": True}, name)  # a real change of recipe
    assert not same_arch(saved, saved | {"hidden_size": 256}, name)


def test_no_act_continue_is_a_settable_arch_key() -> None:
    from pretrain import check_cli_overrides

    assert check_cli_overrides(["arch.no_ACT_continue=true"]) == ["arch.no_ACT_continue=true"]
    assert check_cli_overrides(["+arch.no_ACT_continue=true"]) == ["arch.no_ACT_continue=true"]  # TRM habit
