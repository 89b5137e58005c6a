"""Where and how the model runs: device, dtype, distributed setup, gradient reduction and the compile guard.

Device, forward dtype and compile are chosen here; the attention backend in models/attention.py and the SwiGLU
kernel in models/layers.py. Each choice is made once and comes back with a one-line reason, which
`setup_runtime` (below) gathers into the start-up report.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from models.attention import select_attention_backend
from models.common import exception_line
from models.layers import select_mlp_kernel, select_nograd_matmul
from utils.errors import UserError

if TYPE_CHECKING:
    from train.config import PretrainConfig

# ----------------------------------------------------------------------------------------------------------
# Distributed


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> Dist:
    """torchrun sets LOCAL_RANK: then NCCL on CUDA, gloo on CPU (so `torchrun` also works without a GPU)."""
    if "LOCAL_RANK" not in os.environ:
        return Dist()
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def allreduce_grads(params: Iterable[nn.Parameter], bucket_bytes: int = 64 << 20) -> None:
    """Sum gradients over ranks in a few flat buckets (one all_reduce per bucket, not per tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    by_kind: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        by_kind.setdefault((g.device, g.dtype), []).append(g)
    for group in by_kind.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for g in group + [None]:  # type: ignore[list-item]
            if g is not None:
                bucket.append(g)
                size += g.numel() * g.element_size()
            if bucket and (g is None or size >= bucket_bytes):
                flat = torch.cat([t.reshape(-1) for t in bucket])
                dist.all_reduce(flat)
                offset = 0
                for t in bucket:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()
                bucket, size = [], 0


# ----------------------------------------------------------------------------------------------------------
# Device and dtype


def resolve_device(pref: str, local_rank: int = 0) -> tuple[torch.device, str]:
    if pref not in ("auto", "cuda", "cpu", "mps"):
        raise UserError(f"device must be auto, cuda, cpu or mps, got {pref!r}")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError(
                "device=cuda but PyTorch sees no CUDA GPU (check `nvidia-smi` and that torch is a CUDA build); use device=cpu"
            )
        dev = torch.device("cuda", local_rank)
        return (
            dev,
            f"{torch.cuda.get_device_name(dev)}, {torch.cuda.get_device_properties(dev).total_memory / 2**30:.0f} GiB",
        )
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "mps" or (pref == "auto" and mps_ok):
        if not mps_ok:
            raise UserError("device=mps but this PyTorch has no Apple MPS support; use device=cpu")
        return torch.device("mps"), "Apple MPS"
    return torch.device("cpu"), f"CPU, {torch.get_num_threads()} threads" + (
        " (no GPU found)" if pref == "auto" else ""
    )


def resolve_forward_dtype(requested: str | None, device: torch.device) -> tuple[str, str]:
    """bf16 where the device does it natively, fp32 otherwise; an explicit arch.forward_dtype always wins."""
    if requested is not None:
        if not isinstance(getattr(torch, str(requested), None), torch.dtype):
            raise UserError(f"arch.forward_dtype={requested!r} is not a torch dtype (use bfloat16, float16 or float32)")
        return str(requested), "set in config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", "GPU supports bf16"
        return "float32", "this GPU has no native bf16 (fp32 is slower but safe; fp16 has no loss scaling here)"
    return "float32", f"bf16 is slow or unsupported on {device.type}"


# ----------------------------------------------------------------------------------------------------------
# torch.compile with a guard


def compile_wanted(setting: Any, device: torch.device) -> tuple[bool, str]:
    if os.environ.get("DISABLE_COMPILE", "").strip() not in ("", "0", "false", "False"):
        return False, "DISABLE_COMPILE is set"
    if setting in (False, "false", "False", "off", 0):
        return False, "compile=false"
    if setting in (True, "true", "True", "on", 1):
        return True, "compile=true"
    if setting not in (None, "auto"):
        raise UserError(f"compile must be auto, true or false, got {setting!r}")
    if device.type != "cuda":
        return False, f"off by default on {device.type} (compile=true to force)"
    return True, "on by default on CUDA"


def compile_modes() -> dict[str, dict[str, Any]]:
    """torch.compile's modes and the Inductor settings each one turns on: this PyTorch's own list."""
    import torch._inductor

    return torch._inductor.list_mode_options()


def check_compile_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in compile_modes():
        raise UserError(f"compile_mode must be null or one of {', '.join(compile_modes())}; got {mode!r}")
    return mode


def uses_cuda_graphs(mode: str | None) -> bool:
    """Modes that replay each compiled call as one CUDA graph: they pay where a step is bound by kernel launches
    (small batches) and cost a private memory pool."""
    return mode is not None and bool(compile_modes().get(mode, {}).get("triton.cudagraphs"))


COMPILE_SCOPES = ("model", "block")  # train/config.py compile_scope: what torch.compile compiles


def check_compile_scope(scope: str, mode: str | None, arch_name: str) -> tuple[str, ...]:
    """compile_scope checked once (UserError on a bad value): the names of the modules `block` compiles (the
    model class's `compile_region_names`, models/act.py), () for `model`."""
    if scope not in COMPILE_SCOPES:
        raise UserError(f"compile_scope must be one of {', '.join(COMPILE_SCOPES)}; got {scope!r}")
    if scope == "model":
        return ()
    if uses_cuda_graphs(mode):
        # not tried: each region would be its own CUDA graph, whose outputs (the next call's inputs) live in a pool
        # the next replay overwrites; only the whole model's outputs are copied out of it (out_of_graph_pool)
        raise UserError(
            f"compile_scope=block does not take compile_mode={mode} (CUDA graphs); use compile_scope=model, or a "
            "compile_mode without CUDA graphs (null or max-autotune-no-cudagraphs)"
        )
    from train.functions import load_model_class

    names = tuple(getattr(load_model_class(arch_name), "compile_region_names", ()))
    if not names:
        raise UserError(
            f"compile_scope=block: {arch_name} names no reasoning modules to compile; use compile_scope=model"
        )
    return names


def describe_compile_mode(mode: str) -> str:
    opts = compile_modes()[mode]
    parts = [
        what
        for key, what in (("max_autotune", "autotuned kernels"), ("triton.cudagraphs", "CUDA graphs"))
        if opts.get(key)
    ]
    return " and ".join(parts) or "torch's default kernels"


def out_of_graph_pool(obj: Any) -> Any:
    """obj with every tensor copied (through dataclasses, dicts, lists and tuples). A CUDA graph's outputs live in
    its memory pool, where the next replay writes: the ACT carry one step returns is the next step's input, and
    cudagraph trees refused it as an overwritten output (BENCHMARKS.md). A carry at batch 384 is ~80 MB to copy."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return type(obj)(**{f.name: out_of_graph_pool(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    if isinstance(obj, dict):
        return {k: out_of_graph_pool(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(out_of_graph_pool(v) for v in obj)
    return obj


class CompileGuard:
    """Holds the eager module and, when enabled, its torch.compile'd twin.

    Compilation happens lazily at the first call of each mode; if that fails (a missing compiler, a
    Dynamo/Inductor bug), the run prints one line with the reason and continues eager instead of dying.
    Checkpoints always use `eager` (no `_orig_mod.` prefixes).

    `scope` (train/config.py compile_scope): "model" compiles the whole module into a twin; "block" compiles only
    the module's `compile_regions()` (the repeated reasoning modules, models/act.py) in place, so `compiled` is
    the eager module itself, its state_dict keys unchanged, and the fallback undoes the in-place compile.
    """

    def __init__(
        self,
        model: nn.Module,
        enabled: bool,
        log: Callable[[str], None] = print,
        mode: str | None = None,
        scope: str = "model",
    ) -> None:
        self.eager = model
        self.scope = scope
        self.regions: list[nn.Module] = []  # the modules compiled in place (scope "block")
        self.compiled: nn.Module | None = None
        if enabled and scope == "block":
            self.regions = model.compile_regions()  # type: ignore[operator]
            for region in self.regions:
                region.compile(dynamic=False, mode=mode)
            self.compiled = model
        elif enabled:
            self.compiled = torch.compile(model, dynamic=False, mode=mode)  # type: ignore[assignment]
        self.log = log
        self.graphs = enabled and uses_cuda_graphs(mode)
        self.mode = mode
        self._calls: dict[str, int] = {}  # compiled calls that succeeded, per key
        # cudagraph trees run a call eagerly first, record the graph at the second and replay from the third:
        # each of them can fail, so the eager fallback stays armed until the first replay succeeded
        self._trial_calls = 3 if self.graphs else 1
        # calls slower than the steady ones, for step-time estimates: the first (compile), with CUDA graphs
        # also the second (the recording: 80 ms where a replay takes 16 at batch 192 on an H200)
        self.warmup_calls = 2 if self.graphs else 1

    @property
    def active(self) -> nn.Module:
        return self.compiled if self.compiled is not None else self.eager

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def run(self, key: str, fn: Callable[[nn.Module], Any], cleanup: Callable[[], None] | None = None) -> Any:
        """Run fn(model); on the first call for `key` with compile on (the first three with CUDA graphs), fall back
        to eager if it fails."""
        graphs = self.graphs and self.compiled is not None
        if graphs:
            # one train step or eval batch = one generation of CUDA graph replays; what fn returns is copied out
            # of the graphs' pool, so the next generation may overwrite everything the last one wrote
            torch.compiler.cudagraph_mark_step_begin()
        if self.compiled is None or self._calls.get(key, 0) >= self._trial_calls:
            out = fn(self.active)
            return out_of_graph_pool(out) if graphs else out
        try:
            out = fn(self.compiled)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:
            other = f"Drop compile_mode={self.mode} to compile without it, or set" if self.mode else "Set"
            self.log(
                f"torch.compile failed ({exception_line(e, 200)}); continuing eager. {other} DISABLE_COMPILE=1 to skip compiling."
            )
            self.compiled = None
            for region in self.regions:  # nn.Module.compile's wrapper: None makes the region eager again
                region._compiled_call_impl = None
            self.regions = []
            if cleanup is not None:
                cleanup()
            return fn(self.eager)
        self._calls[key] = self._calls.get(key, 0) + 1
        return out_of_graph_pool(out) if graphs else out


# ----------------------------------------------------------------------------------------------------------
# All of the choices, for pretrain.py, evaluate.py and predict.py


@dataclass
class Runtime:
    d: Dist
    device: torch.device
    forward_dtype: str
    use_compile: bool
    report: list[tuple[str, str]]  # the start-up report's first rows: each choice and its reason


def setup_runtime(config: PretrainConfig, d: Dist, training: bool = False) -> Runtime:
    """Every runtime choice, checked once. `training`: pretrain.py's run, where the training-only ones apply
    (evaluate.py and predict.py read a run's config and must not refuse a checkpoint over them)."""
    device, device_desc = resolve_device(config.device, d.local_rank)
    forward_dtype, dtype_why = resolve_forward_dtype(
        (config.arch.__pydantic_extra__ or {}).get("forward_dtype"), device
    )
    try:
        attn, attn_why = select_attention_backend(config.attn_backend, device, getattr(torch, forward_dtype))
        mlp, mlp_why = select_mlp_kernel(config.mlp_kernel, device, getattr(torch, forward_dtype))
        fp8_note = select_nograd_matmul(training and config.nograd_fp8, device, getattr(torch, forward_dtype))
    except ValueError as e:
        raise UserError(str(e)) from None
    use_compile, compile_why = compile_wanted(config.compile, device)
    mode = check_compile_mode(config.compile_mode)
    regions = check_compile_scope(config.compile_scope, mode, config.arch.name)
    if use_compile and mode is not None:
        compile_why += f"; mode {mode}: {describe_compile_mode(mode)}"
    scope_note = f"; scope block: the reasoning modules only ({', '.join(regions)})" if use_compile and regions else ""
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    report = [
        ("versions", f"Python {sys.version.split()[0]}, torch {torch.__version__}{cuda}"),
        ("device", device_desc),
        ("attention", f"{attn} ({attn_why})" if attn_why else attn),
        ("SwiGLU", f"{mlp} ({mlp_why})"),
        ("compile", f"{'on' if use_compile else 'off'} ({compile_why}){scope_note}"),
        ("forward dtype", f"{forward_dtype} ({dtype_why})" + (f"; {fp8_note}" if fp8_note else "")),
        ("world size", f"{d.world_size}" + (f" ({d.backend})" if d.backend else "")),
    ]
    return Runtime(d, device, forward_dtype, use_compile, report)
