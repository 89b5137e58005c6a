"""Pure-PyTorch stand-in for the ``adam-atan2`` package's ``AdamATan2`` (NOT the real CUDA package).

Per parameter, with step t counted from 1:
    p   *= 1 - lr * wd
    m    = lerp(m, g, 1 - b1)
    v    = lerp(v, g*g, 1 - b2)
    p   -= lr / (1 - b1**t) * atan2(m, sqrt(v) / sqrt(1 - b2**t))
State keys: step (float32 scalar tensor), exp_avg, exp_avg_sq.
Default path is multi-tensor (torch._foreach_*); atan2 is done per tensor (no _foreach_atan2).
foreach=False selects a plain per-tensor reference loop.
"""

import math

import torch


class AdamATan2(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2, foreach=True):
        lr = float(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=foreach))

    def _init_group(self, group):
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamATan2 does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = self._init_group(group)
            if not params:
                continue
            lr = float(group["lr"])
            b1, b2 = group["betas"]
            wd = group["weight_decay"]
            if group.get("foreach", True):
                _multi_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, lr, b1, b2, wd)
            else:
                _single_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, lr, b1, b2, wd)
        return loss


def _single_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, lr, b1, b2, wd):
    for p, g, m, v, st in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        st += 1
        t = float(st.item())
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.lerp_(g * g, 1 - b2)
        bc1 = 1 - b1**t
        bc2_sqrt = math.sqrt(1 - b2**t)
        p.add_(torch.atan2(m, v.sqrt() / bc2_sqrt), alpha=-lr / bc1)


def _multi_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, lr, b1, b2, wd):
    torch._foreach_add_(steps, 1.0)
    ts = [float(s.item()) for s in steps]

    torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - b2)

    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [math.sqrt(1 - b2**t) for t in ts])
    # torch has no _foreach_atan2: per tensor
    updates = [torch.atan2(m, d) for m, d in zip(exp_avgs, denom)]
    torch._foreach_mul_(updates, [-lr / (1 - b1**t) for t in ts])
    torch._foreach_add_(params, updates)
