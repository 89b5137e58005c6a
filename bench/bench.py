"""Time HRM and TRM training steps and evaluation with the trainer's own functions, for this fork or the peers'.

    python bench/bench.py                                 # this fork, HRM, Sudoku shape (seq 81, batch 768)
    python bench/bench.py --shape arc                     # ARC/Maze shape (seq 900, batch 96)
    python bench/bench.py --impl orig --root /path/to/HRM # the original checkout (see bench/standins/README.md)
    python bench/bench.py --model trm-mlp                 # TRM's Sudoku model (recipe=trm-sudoku's arch, EMA on)
    python bench/bench.py --model trm-attn                # TRM with attention and RoPE (nano-trm's variant)
    python bench/bench.py --model trm-mlp --impl trm-orig --root trm-orig   # TRM's own code, same batches

Each run prints one JSON line (ms/step, MFU, peak memory, eval puzzles/s). Both implementations are driven
through their own `train_batch` and `evaluate`, on the same random batches, so per-step overheads
(host syncs, metric reduction, optimizer launches) are counted as a user would pay them.
`bench/compare.py` runs both and prints the comparison table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import torch

SHAPES = {
    # name: (seq_len, vocab, global batch, puzzle identifiers)
    "sudoku": (81, 11, 768, 1),
    "arc": (900, 12, 96, 1000),
}
ARCH = dict(
    name="hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
    loss=dict(name="losses@ACTLossHead", loss_type="stablemax_cross_entropy"),
    halt_exploration_prob=0.1,
    halt_max_steps=16,
    H_cycles=2,
    L_cycles=2,
    H_layers=4,
    L_layers=4,
    hidden_size=512,
    num_heads=8,
    expansion=4,
    puzzle_emb_ndim=512,
    pos_encodings="rope",
)


# TRM (config/arch/trm.yaml; recipe=trm-sudoku for the mlp_t variant). EMA is on in both recipes and timed.
TRM_ARCH = dict(
    name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    loss=dict(name="losses@ACTLossHead", loss_type="stablemax_cross_entropy"),
    halt_exploration_prob=0.1,
    halt_max_steps=16,
    no_ACT_continue=True,
    H_cycles=3,
    L_cycles=6,
    H_layers=0,
    L_layers=2,
    hidden_size=512,
    num_heads=8,
    expansion=4,
    puzzle_emb_ndim=512,
    puzzle_emb_len=16,
)
MODELS = {
    "hrm": ARCH,
    "trm-mlp": TRM_ARCH | dict(mlp_t=True, pos_encodings="none"),
    "trm-attn": TRM_ARCH | dict(mlp_t=False, pos_encodings="rope"),
}


def swiglu_inter(width: int, expansion: float) -> int:
    """The SwiGLU's hidden width (models/layers.py SwiGLU: 2/3 of expansion x width, rounded up to 256)."""
    return -(round(expansion * width * 2 / 3) // -256) * 256


def trm_flops_per_step(seq: int, vocab: int, batch: int, arch: dict) -> tuple[float, float]:
    """TRM's (train step, one evaluated puzzle) in FLOP (2 per MAC), matmuls and attention (BENCHMARKS.md).

    One block per position: token mixing (mlp_t: a SwiGLU of width S = seq + puzzle_emb_len applied to each of
    the h channels, so 3 S inter_t MACs per channel, i.e. 3 h inter_t per position; attention: 4 h^2 for the
    projections + 2 S h for scores and values), then the channel SwiGLU (3 h inter). f = L_layers blocks; a
    segment calls f H_cycles (L_cycles + 1) times, the last L_cycles + 1 with gradient (backward = 2x forward);
    no Q-target forward (no_ACT_continue). The LM head (h x vocab per position) is counted once forward and
    twice backward."""
    h, s = arch["hidden_size"], seq + arch["puzzle_emb_len"]
    if arch["mlp_t"]:
        mix = 3 * h * swiglu_inter(s, arch["expansion"])
    else:
        mix = 4 * h * h + 2 * s * h
    block = 2 * (mix + 3 * h * swiglu_inter(h, arch["expansion"]))  # FLOP per position
    f = arch["L_layers"] * block
    calls = arch["H_cycles"] * (arch["L_cycles"] + 1)
    grad_calls = arch["L_cycles"] + 1
    head = 2 * h * vocab
    train = (calls * f + 2 * grad_calls * f + 3 * head) * s * batch
    puzzle = (calls * f + head) * s * arch["halt_max_steps"]
    return train, puzzle


def flops_per_step(seq: int, batch: int, arch: dict, emb_len: int) -> tuple[float, float]:
    """(train step, one evaluated puzzle) in FLOP, counting matmuls and attention (2 FLOP per MAC)."""
    h = arch["hidden_size"]
    inter = swiglu_inter(h, arch["expansion"])
    s = seq + emb_len
    block = 2 * (h * 3 * h + h * h + h * 2 * inter + inter * h) + 4 * s * h  # per token
    calls = arch["H_cycles"] * arch["L_cycles"] + arch["H_cycles"]  # module calls in one segment
    layers = (arch["H_layers"] + arch["L_layers"]) / 2
    seg_fwd = calls * layers * block
    grad_fwd = 2 * layers * block  # the last f_L and f_H with grad
    q_target = 0 if str(arch.get("no_ACT_continue", False)).lower() == "true" else seg_fwd
    train = (seg_fwd + 2 * grad_fwd + q_target) * s * batch  # forward, backward (2x), Q-target forward
    puzzle = seg_fwd * s * arch["halt_max_steps"]
    return train, puzzle


def make_batches(n: int, seq: int, vocab: int, batch: int, ids: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inputs = torch.randint(1, vocab, (batch, seq), generator=g, dtype=torch.int32)
        labels = torch.randint(2, vocab, (batch, seq), generator=g, dtype=torch.int32)
        pid = torch.randint(0, ids, (batch,), generator=g, dtype=torch.int32)
        b = dict(inputs=inputs, labels=labels, puzzle_identifiers=pid)
        out.append({k: v.pin_memory() for k, v in b.items()} if torch.cuda.is_available() else b)
    return out


def config_dict(seq: int, vocab: int, batch: int, ids: int, arch: dict) -> dict:
    trm = arch["name"].startswith("recursive_reasoning.trm")
    return dict(
        arch=arch,
        data_path="bench",
        global_batch_size=batch,
        epochs=1,
        eval_interval=1,
        lr=1e-4,
        lr_min_ratio=1.0,
        lr_warmup_steps=10,
        weight_decay=1.0 if trm else 0.1,
        beta1=0.9,
        beta2=0.95,
        puzzle_emb_lr=1e-4,
        puzzle_emb_weight_decay=1.0 if trm else 0.1,
        checkpoint_path=None,
        ema=trm,  # TRM's recipes average the weights; its update is part of every step
    )


def metadata_dict(seq: int, vocab: int, ids: int, groups: int) -> dict:
    return dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=vocab,
        seq_len=seq,
        num_puzzle_identifiers=ids,
        total_groups=groups,
        mean_puzzle_examples=1,
        sets=["all"],
    )


def setup_ours(
    root: Path,
    cfg: dict,
    meta: dict,
    compile_: bool,
    micro: int | None = None,
    mlp: str = "auto",
    mode: str | None = None,
    fp8: bool = False,
    scope: str = "model",
):
    sys.path.insert(0, str(root))
    from dataset.format import PuzzleDatasetMetadata
    from train import steps as pretrain  # the original's names (PretrainConfig, create_model, train_batch...)
    from train.ema import EMA
    from train.runtime import Dist, setup_runtime

    config = pretrain.PretrainConfig(
        **cfg,
        compile=compile_,
        compile_mode=mode,
        compile_scope=scope,
        attn_backend="auto",
        micro_batch_size=micro,
        mlp_kernel=mlp,
        nograd_fp8=fp8,
    )
    d = Dist()
    rt = setup_runtime(config, d, training=True)
    m = PuzzleDatasetMetadata(**meta)
    model, opts, lrs = pretrain.create_model(config, m, d, rt.device, rt.forward_dtype, rt.use_compile)
    state = pretrain.TrainState(model=model, optimizers=opts, optimizer_lrs=lrs, carry=None, step=0, total_steps=10**6)
    state.ema = EMA(model.eager, config.ema_rate) if config.ema else None

    def train(batch, gbs):
        return pretrain.train_batch(config, state, batch, gbs, d, rt.device)

    def evaluate(batches):
        model.eager.eval()
        out = pretrain.evaluate(config, state, [("all", b, len(b["inputs"])) for b in batches], m, d, rt.device)
        model.eager.train()
        return out

    return train, evaluate, model.eager, dict(rt.report)


def setup_orig(root: Path, cfg: dict, meta: dict, compile_: bool):
    """The original, imported from its own checkout (with the SDPA and AdamATan2 stand-ins in place)."""
    sys.path.insert(0, str(root))
    if not compile_:
        os.environ["DISABLE_COMPILE"] = "1"
    try:
        import wandb  # noqa: F401
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")  # imported at the top of its pretrain.py, unused here
    from puzzle_dataset import PuzzleDatasetMetadata

    import pretrain  # the original's

    config = pretrain.PretrainConfig(**cfg)
    m = PuzzleDatasetMetadata(**meta)
    state = pretrain.init_train_state(config, m, world_size=1)
    state.total_steps = 10**6

    def train(batch, gbs):
        return pretrain.train_batch(config, state, batch, gbs, rank=0, world_size=1)

    def evaluate(batches):
        state.model.eval()
        out = pretrain.evaluate(config, state, [("all", b, len(b["inputs"])) for b in batches], m, rank=0, world_size=1)
        state.model.train()
        return out

    return train, evaluate, state.model, {"attention": "flash_attn stand-in (SDPA)"}


def setup_trm_orig(root: Path, cfg: dict, meta: dict, compile_: bool):
    """TRM's own code (SamsungSAILMontreal/TinyRecursiveModels), imported from its checkout with our stand-ins for
    adam_atan2 (bench/standins) and argdantic/wandb (unused here); its EMAHelper updated after each step, as its
    training loop does."""
    sys.path.insert(0, str(root))
    sys.path.insert(1, str(Path(__file__).resolve().parent / "standins"))  # adam_atan2 (after the checkout)
    if not compile_:
        os.environ["DISABLE_COMPILE"] = "1"
    try:
        import wandb  # noqa: F401
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")  # imported at the top of its pretrain.py, unused here
    from run_original import install_argdantic_stub  # its puzzle_dataset imports argdantic for its command line

    install_argdantic_stub()
    from models.ema import EMAHelper
    from puzzle_dataset import PuzzleDatasetMetadata

    import pretrain  # TRM's

    cfg = dict(cfg)
    cfg.pop("data_path")
    config = pretrain.PretrainConfig(**cfg, data_paths=["bench"])
    m = PuzzleDatasetMetadata(**meta, total_puzzles=meta["total_groups"])
    state = pretrain.init_train_state(config, m, rank=0, world_size=1)
    state.total_steps = 10**6
    ema = EMAHelper(mu=config.ema_rate) if config.ema else None
    if ema is not None:
        ema.register(state.model)

    def train(batch, gbs):
        out = pretrain.train_batch(config, state, batch, gbs, rank=0, world_size=1)
        if ema is not None:
            ema.update(state.model)
        return out

    def evaluate(batches):
        state.model.eval()
        loader = [("all", b, len(b["inputs"])) for b in batches]
        out = pretrain.evaluate(config, state, loader, m, [], rank=0, world_size=1, cpu_group=None)
        state.model.train()
        return out

    return train, evaluate, state.model, {"attention": "SDPA (TRM's own)"}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, n: int) -> float:
    sync()
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    sync()
    return (time.perf_counter() - t) / n


# Where a step's GPU time goes, by kernel name (BENCHMARKS.md's TRM breakdown). First match wins.
KERNEL_KINDS = (
    ("our Triton kernels", ("_token_mix_kernel", "_swiglu_gate_up_kernel")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("matmul (cuBLAS/CUTLASS)", ("gemm", "gemv", "cutlass", "xmma", "nvjet", "cublas", "wgmma", "_mm_")),
    ("optimizer and EMA (foreach)", ("foreach", "multi_tensor", "lerp")),
    ("copies and fills", ("copy", "memcpy", "memset", "fill", "cat")),
)
INDUCTOR = "inductor fused (elementwise, norms, loss)"


def kernel_kind(name: str) -> str:
    """The bucket of one CUDA kernel's name ('other' if none matches). Inductor's kernels (triton_*) are its
    fused math, except its pure layout copies (a transpose made contiguous is a `clone`)."""
    low = name.lower()
    if low.startswith("triton_"):
        return "copies and fills" if "clone" in low and not any(m in low for m in ("add", "mul", "mean")) else INDUCTOR
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def gpu_busy(step, n: int = 5, trace: str | None = None) -> dict:
    """Profile n training steps: share of wall time the GPU runs kernels, the costliest kernels (ms/step),
    where the GPU sits idle (gaps over 10 us, by the kernel that ends each gap, ms/step) and the host syncs."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for i in range(n):
            step(i)
        sync()
        wall = time.perf_counter() - t
    if trace:
        prof.export_chrome_trace(trace)
    events = prof.events()
    kernels = sorted(
        (e for e in events if e.device_type.name == "CUDA"), key=lambda e: (e.time_range.start, e.time_range.end)
    )
    busy, end, gaps = 0.0, float("-inf"), {}
    for e in kernels:  # union of kernel intervals (us); a gap is charged to the kernel that ends it
        a, b = e.time_range.start, e.time_range.end
        if a - end > 10 and end > float("-inf"):
            gaps[e.name[:60]] = gaps.get(e.name[:60], 0.0) + (a - end) / 1e3 / n
        if b > end:
            busy += b - max(a, end)
            end = b
    per_name: dict[str, float] = {}
    per_kind: dict[str, float] = {}
    for e in kernels:
        ms = (e.time_range.end - e.time_range.start) / 1e3 / n
        per_name[e.name[:80]] = per_name.get(e.name[:80], 0.0) + ms
        per_kind[kernel_kind(e.name)] = per_kind.get(kernel_kind(e.name), 0.0) + ms
    syncs: dict[str, list[float]] = {}
    for e in events:
        if e.device_type.name == "CPU" and e.name in (
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaEventSynchronize",
            "cudaMemcpyAsync",
            "cudaMemcpy",
        ):
            c = syncs.setdefault(e.name, [0.0, 0.0])
            c[0] += 1 / n
            c[1] += (e.time_range.end - e.time_range.start) / 1e3 / n

    def top(d: dict[str, float], k: int) -> dict[str, float]:
        return {name: round(v, 2) for name, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]}

    return dict(
        gpu_busy=round(busy / 1e6 / wall, 3),
        kernels_per_step=round(len(kernels) / n),
        kernel_ms_by_kind=top(per_kind, len(KERNEL_KINDS) + 2),
        top_kernels=top(per_name, 16),
        idle_ms_per_step=round(sum(gaps.values()), 2),
        idle_before=top(gaps, 8),
        host_syncs={k: [round(c, 1), round(ms, 2)] for k, (c, ms) in syncs.items()},
    )


def matmul_peak() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = timed(lambda _: a @ b, 10)
    return 2 * 8192**3 / t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["ours", "orig", "trm-orig"], default="ours")
    p.add_argument("--model", choices=list(MODELS), default="hrm", help="hrm, or TRM: trm-mlp (Sudoku) / trm-attn")
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout to benchmark")
    p.add_argument("--shape", choices=list(SHAPES), default="sudoku")
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the recipe's)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-batches", type=int, default=4, help="0 skips the eval timing")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (default: measured 8k matmul)")
    p.add_argument("--micro", type=int, default=None, help="micro_batch_size (this fork only)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--compile-scope", default="model", choices=["model", "block"], help="this fork's compile_scope key")
    p.add_argument(
        "--sdpa", default=None, choices=["flash", "cudnn", "efficient", "math"], help="force one SDPA kernel"
    )
    p.add_argument(
        "--eval-batch", type=int, nargs="+", default=None, help="eval batch sizes to time (default: the training batch)"
    )
    p.add_argument(
        "--inductor",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="torch._inductor.config settings, e.g. coordinate_descent_tuning=1",
    )
    p.add_argument(
        "--profile", action="store_true", help="also report GPU-busy share of a training step and top kernels"
    )
    p.add_argument("--mlp", default="auto", choices=["auto", "fused", "plain"], help="this fork's SwiGLU kernel")
    p.add_argument("--nograd-fp8", action="store_true", help="this fork's nograd_fp8 key: no-grad GEMMs in fp8")
    p.add_argument("--trace", default=None, help="with --profile: write the Chrome trace of the profiled steps here")
    p.add_argument(
        "--arch", nargs="*", default=[], metavar="KEY=VALUE", help="override arch settings, e.g. hidden_size=64"
    )
    args = p.parse_args()
    arch = dict(MODELS[args.model])
    for kv in args.arch:
        k, v = kv.split("=", 1)
        old = arch.get(k)
        arch[k] = (v.lower() == "true") if isinstance(old, bool) else type(old)(v) if k in arch else v
    cuda = torch.cuda.is_available()

    seq, vocab, batch, ids = SHAPES[args.shape]
    batch = args.batch or batch
    sys.path = [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).resolve().parent]
    if (args.impl == "trm-orig") != args.model.startswith("trm") and args.impl != "ours":
        p.error(f"--impl {args.impl} runs {'TRM' if args.impl == 'trm-orig' else 'HRM'}; pick a matching --model")
    cfg, meta = config_dict(seq, vocab, batch, ids, arch), metadata_dict(seq, vocab, ids, groups=10**6)
    setup = {"ours": setup_ours, "orig": setup_orig, "trm-orig": setup_trm_orig}[args.impl]
    if args.compile_mode and args.impl == "orig":  # ours takes it as its compile_mode key (marks and copies)
        import functools

        torch.compile = functools.partial(torch.compile, mode=args.compile_mode)  # type: ignore[assignment]
    if args.sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {
            "flash": "FLASH_ATTENTION",
            "cudnn": "CUDNN_ATTENTION",
            "efficient": "EFFICIENT_ATTENTION",
            "math": "MATH",
        }
        sdpa_kernel([getattr(SDPBackend, names[args.sdpa])]).__enter__()
    for kv in args.inductor:
        import torch._inductor.config as inductor_config

        k, v = kv.split("=", 1)
        setattr(inductor_config, k, type(getattr(inductor_config, k))(int(v) if v.isdigit() else v))
    torch.manual_seed(0)
    extra = ({"micro": args.micro} if args.micro else {}) | (
        {"mlp": args.mlp, "mode": args.compile_mode, "fp8": args.nograd_fp8, "scope": args.compile_scope}
        if args.impl == "ours"
        else {}
    )
    train, evaluate, model, report = setup(args.root.resolve(), cfg, meta, not args.no_compile, **extra)

    batches = make_batches(8, seq, vocab, batch, ids)
    t0 = time.perf_counter()
    for i in range(args.warmup):
        train(batches[i % len(batches)], batch)
    sync()
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_s = timed(lambda i: train(batches[i % len(batches)], batch), args.steps)
    peak_gb = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")

    profile = (
        gpu_busy(lambda i: train(batches[i % len(batches)], batch), trace=args.trace) if args.profile and cuda else {}
    )

    puzzles_s, by_eval_batch, eval_warm_s = float("nan"), {}, {}
    if args.eval_batches > 0:
        for eval_batch in args.eval_batch or [batch]:
            eval_batches = make_batches(args.eval_batches, seq, vocab, eval_batch, ids, seed=1)
            t_first = time.perf_counter()
            evaluate(eval_batches[:1])  # compile / warm up eval at this shape
            sync()
            eval_warm_s.setdefault(eval_batch, round(time.perf_counter() - t_first, 1))
            eval_s = timed(lambda _, b=eval_batches: evaluate(b), 2)
            by_eval_batch[eval_batch] = round(args.eval_batches * eval_batch / eval_s, 1)
        puzzles_s = next(iter(by_eval_batch.values()))

    if args.model.startswith("trm"):
        f_train, f_puzzle = trm_flops_per_step(seq, vocab, batch, arch)
    else:
        f_train, f_puzzle = flops_per_step(seq, batch, arch, -(arch["puzzle_emb_ndim"] // -arch["hidden_size"]))
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (matmul_peak() if cuda else float("nan"))
    print(
        json.dumps(
            dict(
                impl=args.impl,
                model=args.model,
                shape=args.shape,
                batch=batch,
                compile=not args.no_compile,
                gpu=torch.cuda.get_device_name() if cuda else "cpu",
                torch=torch.__version__,
                ms_per_step=round(step_s * 1e3, 2),
                examples_per_s=round(batch / step_s, 1),
                steps_per_s=round(1 / step_s, 2),
                train_tflops=round(f_train / step_s / 1e12, 1),
                mfu=round(f_train / step_s / peak, 3),
                peak_mem_gb=round(peak_gb, 2),
                eval_puzzles_per_s=round(puzzles_s, 1),
                eval_mfu=round(f_puzzle * puzzles_s / peak, 3),
                warmup_s=round(warm_s, 1),  # the warm-up steps, the step's compile included
                eval_first_s=next(iter(eval_warm_s.values()), None),  # the first eval batch, its compile included
                peak_tflops=round(peak / 1e12, 1),
                attention=report.get("attention", ""),
                swiglu=report.get("SwiGLU", ""),
                compile_mode=args.compile_mode,
                compile_scope=args.compile_scope if args.impl == "ours" else None,
                nograd_fp8=args.nograd_fp8 or None,
                micro_batch_size=args.micro,
                eval_puzzles_per_s_by_batch=by_eval_batch or None,
                inductor=args.inductor or None,
                **profile,
                sdpa=args.sdpa,
                params=sum(p.numel() for p in model.parameters()),
            )
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
