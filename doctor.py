"""Check this install before a long run: `python doctor.py [--quick] [data_path ...]`.

One line per check: name, status, detail and, when something is not ok, what to do. Statuses:
    ok    works
    info  not used here, nothing to do (e.g. FlashAttention on a CPU machine)
    skip  not checked this time (--quick, DISABLE_COMPILE)
    warn  runs will work, but slower or with less than they could (no GPU, FlashAttention broken, offline)
    FAIL  runs will not work until fixed
Exit code 0 when nothing FAILs, 1 otherwise. Only the standard library is imported at module level, so a
missing or broken torch is reported as a FAIL line instead of a traceback.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REPO = os.path.dirname(os.path.abspath(__file__))
HUB_TIMEOUT_S = 3.0
COMPILE_TIMEOUT_S = 90.0
STATUSES = ("ok", "info", "skip", "warn", "FAIL")
NAME_WIDTH = 10
STATUS_WIDTH = 4

# Python module -> (distribution, minimum version or "", required). Required ones are imported by pretrain.py
# / evaluate.py / the builder; the others only degrade something (run names, downloads).
PACKAGES: dict[str, tuple[str, str, bool]] = {
    "numpy": ("numpy", "1.24", True),
    "pydantic": ("pydantic", "2.0", True),
    "yaml": ("pyyaml", "", True),
    "hydra": ("hydra-core", "1.3", True),
    "omegaconf": ("omegaconf", "2.3", True),
    "tqdm": ("tqdm", "", True),
    "coolname": ("coolname", "", False),
    "huggingface_hub": ("huggingface_hub", "", False),
}
INSTALL_FA3 = (
    "git clone https://github.com/Dao-AILab/flash-attention && cd flash-attention/hopper && python setup.py install"
)
INSTALL_FA2 = "pip install flash-attn --no-build-isolation"
# A CUDA build without a GPU to run on: the CPU build runs the same, in a 1.2 GB environment instead of 5.7 GB.
INSTALL_CPU_TORCH = (
    "no GPU to use here: the CPU build of torch saves ~4.5 GB of disk; in a fresh environment run "
    "`pip install torch --index-url https://download.pytorch.org/whl/cpu`, then `pip install -r requirements.txt`"
)
OFFLINE_BUILD = (
    "build datasets offline: dataset/build_sudoku_dataset.py --source-dir DIR (a folder with the HF train.csv "
    "and test.csv) or --generate N (puzzles made here)"
)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit]}" if text else type(e).__name__


def _version_tuple(v: str) -> tuple[int, ...]:
    """'2.13.0+cpu' -> (2, 13, 0); stops at the first non-numeric part ('2.5.0a0' -> (2, 5))."""
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
        if not part.isdigit():
            break
    return tuple(out)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0", "false", "False")


# ----------------------------------------------------------------------------------------------------------
# Background checks: started first so the network wait and the compile (the slow parts) overlap the rest.


class HubProbe:
    """HEAD request to the Hub in a daemon thread: DNS lookups ignore socket timeouts, so the caller waits
    on the thread (at most HUB_TIMEOUT_S + a little) instead of on the request."""

    def __init__(self) -> None:
        self.endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        self.result: tuple[int | None, str] | None = None
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            req = urllib.request.Request(self.endpoint, method="HEAD", headers={"User-Agent": "hrm-doctor"})
            with urllib.request.urlopen(req, timeout=HUB_TIMEOUT_S) as r:
                self.result = (r.status, "")
        except urllib.error.HTTPError as e:  # the server answered: reachable
            self.result = (e.code, "")
        except urllib.error.URLError as e:
            self.result = (None, str(e.reason) if e.reason else _first_line(e))
        except Exception as e:
            self.result = (None, _first_line(e))

    def check(self) -> Check:
        if _env_flag("HF_HUB_OFFLINE"):
            return Check(
                "hf hub",
                "info",
                "HF_HUB_OFFLINE is set: the Sudoku builder only uses files already in the HF cache",
                OFFLINE_BUILD,
            )
        self.thread.join(max(0.0, HUB_TIMEOUT_S + 0.5 - (time.monotonic() - self.t0)))
        host = self.endpoint.split("//")[-1]
        if self.result is None:
            return Check("hf hub", "warn", f"{host}: no answer in {HUB_TIMEOUT_S:.0f} s", OFFLINE_BUILD)
        code, why = self.result
        if code is None:
            return Check("hf hub", "warn", f"{host} unreachable ({why})", OFFLINE_BUILD)
        if code >= 500:
            return Check("hf hub", "warn", f"{host} answered HTTP {code} (server trouble)", OFFLINE_BUILD)
        return Check("hf hub", "ok", f"{host} reachable (HTTP {code})")


# Runs in a child process: a compiler that crashes or hangs must not take the doctor with it.
_COMPILE_SCRIPT = r"""
import json, sys, time
out = {}
try:
    import torch
    dev = torch.device(sys.argv[1])
    if dev.type == "cpu":
        try:
            from torch._inductor import cpp_builder  # private API: only used to name the compiler
            out["cxx"] = cpp_builder.get_cpp_compiler()
        except Exception as e:
            out["cxx_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).to(dev)
    x = torch.randn(4, 16, device=dev)
    t = time.perf_counter()
    y = torch.compile(m, dynamic=False)(x)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out["seconds"] = time.perf_counter() - t
    out["max_err"] = (y - m(x)).abs().max().item()
except Exception as e:
    text = str(e).strip()
    out["error"] = f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"
print("DOCTOR_JSON " + json.dumps(out))
"""


class CompileProbe:
    def __init__(self, device: str, skip_reason: str | None):
        self.device = device
        self.skip_reason = skip_reason
        self.proc: subprocess.Popen[str] | None = None
        if skip_reason is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _COMPILE_SCRIPT, device],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def check(self) -> Check:
        default_note = (
            "runs compile by default on CUDA"
            if self.device == "cuda"
            else f"runs on {self.device} do not compile unless compile=true"
        )
        if self.proc is None:
            return Check("compile", "skip", f"{self.skip_reason}; {default_note}")
        try:
            stdout, stderr = self.proc.communicate(timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.cancel()
            return Check(
                "compile",
                "warn",
                f"compiling a tiny module on {self.device} did not finish in {COMPILE_TIMEOUT_S:.0f} s",
                "runs would wait as long at their first step; DISABLE_COMPILE=1 (or compile=false) skips compiling",
            )
        line = next((ln for ln in stdout.splitlines() if ln.startswith("DOCTOR_JSON ")), None)
        if line is None:
            tail = (stderr.strip().splitlines() or ["no output"])[-1][:200]
            res: dict[str, Any] = {"error": f"the compile check process died (exit {self.proc.returncode}): {tail}"}
        else:
            res = json.loads(line.removeprefix("DOCTOR_JSON "))
        on_cuda = self.device == "cuda"
        cxx = f"; C++ compiler: {res['cxx']}" if res.get("cxx") else ""
        if "error" in res:
            if on_cuda:
                fix = "runs fall back to eager (about 3x slower steps); update torch/triton, or DISABLE_COMPILE=1 to skip trying"
                if importlib.util.find_spec("triton") is None:
                    fix = "install triton (it ships with CUDA builds of torch: `pip install triton`); " + fix
            else:
                fix = "only matters with compile=true on CPU; it needs a C++ compiler (e.g. `apt install g++`, or set CXX)"
            detail = f"torch.compile failed on {self.device} ({res['error']})"
            if res.get("cxx_error"):
                detail += f"; no C++ compiler found ({res['cxx_error']})"
            return Check("compile", "warn", detail, fix)
        if res["max_err"] > 1e-3:
            return Check(
                "compile",
                "FAIL" if on_cuda else "warn",
                f"compiled module gives results {res['max_err']:.1e} away from eager on {self.device}",
                "set DISABLE_COMPILE=1 for runs here and report the torch version",
            )
        return Check(
            "compile",
            "ok",
            f"tiny module compiled on {self.device} in {res['seconds']:.1f} s{cxx}; {default_note}",
        )


# ----------------------------------------------------------------------------------------------------------
# Checks that need nothing but the standard library


def check_python() -> Check:
    v = sys.version.split()[0]
    if sys.version_info < (3, 10):  # noqa: UP036 (pyproject says >= 3.10, but this is where an older one is caught)
        return Check("python", "FAIL", f"{v} ({sys.executable})", "use Python 3.10 or newer (3.11/3.12 are tested)")
    return Check("python", "ok", f"{v} ({sys.executable})")


def check_packages() -> Check:
    missing, old, optional_missing, broken, found = [], [], [], [], []
    for module, (dist, minimum, required) in PACKAGES.items():
        version = _dist_version(dist)
        try:
            importlib.import_module(module)  # a real import: catches installs that exist but fail to load
        except ModuleNotFoundError:
            (missing if required else optional_missing).append(dist)
            continue
        except Exception as e:
            broken.append(f"{dist} ({_first_line(e, 80)})")
            continue
        if minimum and version and _version_tuple(version) < _version_tuple(minimum):
            old.append(f"{dist} {version} < {minimum}")
        found.append(f"{dist} {version or '?'}")
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    problems += [f"too old: {', '.join(old)}"] if old else []
    problems += [f"fails to import: {'; '.join(broken)}"] if broken else []
    if problems:
        return Check("packages", "FAIL", "; ".join(problems), "pip install -r requirements.txt")
    if optional_missing:
        return Check(
            "packages",
            "warn",
            f"optional missing: {', '.join(optional_missing)} (coolname: run names; huggingface_hub: dataset download)",
            "pip install -r requirements.txt",
        )
    return Check("packages", "ok", ", ".join(found))


def check_wandb() -> Check:
    from train.tracking import wandb_logged_in

    version = _dist_version("wandb")
    if version is None:
        return Check(
            "wandb",
            "info",
            "not installed: runs log to <run folder>/metrics.jsonl only",
            "pip install wandb, then `wandb login` (optional)",
        )
    env_mode = os.environ.get("WANDB_MODE")
    logged_in = wandb_logged_in()
    login = "logged in" if logged_in else "not logged in"
    if env_mode:
        if env_mode not in ("online", "offline", "disabled", "dryrun"):
            return Check(
                "wandb",
                "warn",
                f"{version}, {login}; WANDB_MODE={env_mode!r} is not online/offline/disabled/dryrun",
                "unset WANDB_MODE or set it to one of those",
            )
        if env_mode == "online" and not logged_in:
            return Check(
                "wandb",
                "warn",
                f"{version}, not logged in, but WANDB_MODE=online: runs will fail to start W&B",
                "`wandb login` (or set WANDB_API_KEY), or WANDB_MODE=offline",
            )
        return Check("wandb", "ok", f"{version}, {login}; WANDB_MODE={env_mode}: runs with wandb_mode=auto use it")
    if logged_in:
        return Check("wandb", "ok", f"{version}, logged in: runs log online (wandb_mode=auto)")
    return Check(
        "wandb",
        "info",
        f"{version}, not logged in: runs log to <run folder>/metrics.jsonl only (wandb_mode=auto)",
        "`wandb login` (or WANDB_API_KEY) to log online, or wandb_mode=offline to log locally",
    )


# ----------------------------------------------------------------------------------------------------------
# Checks that need torch (imported lazily by main, so a missing torch is a FAIL line, not a traceback)


def check_torch(torch: Any) -> Check:
    cuda = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    cudnn = torch.backends.cudnn.version() if torch.version.cuda else None
    if cudnn:  # an int: 8907 is 8.9.7, 91900 is 9.19.0 (cuDNN 9 widened the minor field)
        base = 10000 if cudnn >= 90000 else 1000
        cudnn = f"{cudnn // base}.{cudnn % base // 100}.{cudnn % 100}"
    detail = f"{torch.__version__}, {cuda}" + (f", cuDNN {cudnn}" if cudnn else "")
    # models/layers.py uses nn.Buffer (torch >= 2.5): an older torch fails when the model is built.
    if not hasattr(torch.nn, "Buffer"):
        return Check(
            "torch",
            "FAIL",
            f"{detail}: too old (the model needs torch.nn.Buffer, torch >= 2.5)",
            "pip install -U torch",
        )
    return Check("torch", "ok", detail)


def nvidia_driver_present() -> bool:
    """Any trace of an NVIDIA driver: its kernel module (Linux), `nvidia-smi`, or the driver's CUDA library."""
    import ctypes.util

    return (
        os.path.exists("/proc/driver/nvidia")
        or shutil.which("nvidia-smi") is not None
        or any(ctypes.util.find_library(n) for n in ("cuda", "nvcuda"))
    )


def check_gpu(torch: Any) -> Check:
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        detail = (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute {cap[0]}.{cap[1]}, "
            f"bf16 {'yes' if bf16 else 'no'}" + (f" ({n} GPUs)" if n > 1 else "")
        )
        try:  # a CUDA build for other GPU architectures imports fine and fails at the first kernel
            (torch.ones(8, device="cuda") * 2).sum().item()
        except Exception as e:
            return Check(
                "gpu",
                "FAIL",
                f"{detail}; a tiny CUDA op failed ({_first_line(e)})",
                "install a torch build for this GPU and driver (https://pytorch.org/get-started/locally/)",
            )
        if not bf16:
            return Check(
                "gpu", "warn", detail + ": runs use fp32 (slower)", "a GPU with bf16 (Ampere or newer) trains faster"
            )
        return Check("gpu", "ok", detail)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Check("gpu", "ok", "Apple MPS (no CUDA GPU): runs use mps, fp32, no FlashAttention or compile")
    if torch.version.cuda:
        detail = f"torch is a CUDA {torch.version.cuda} build but sees no GPU: runs use the CPU (slow)"
        if not nvidia_driver_present():
            return Check("gpu", "warn", detail + "; no NVIDIA driver on this machine", INSTALL_CPU_TORCH)
        return Check("gpu", "warn", detail, "check `nvidia-smi`, the driver, and CUDA_VISIBLE_DEVICES")
    return Check(
        "gpu",
        "warn",
        "no GPU (CPU-only torch): runs use the CPU, fine for tests and the demo, far too slow for the real recipes",
        "for GPU training install a CUDA build of torch (https://pytorch.org/get-started/locally/)",
    )


def check_sdpa(torch: Any, device: Any) -> Check:
    """PyTorch SDPA through the model's own wrapper vs an explicit softmax(QK^T / sqrt(d)) V in float64."""
    from models.attention import sdpa

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 16, 2, 32, generator=gen, dtype=torch.float64) for _ in range(3))  # (B, S, H, D)
    scores = torch.einsum("bshd,bthd->bhst", q, k) / q.shape[-1] ** 0.5
    ref = torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)
    dtypes = [(torch.float32, 1e-4)]
    if device.type == "cuda":
        dtypes.append((torch.bfloat16, 5e-2))
    parts = []
    for dtype, tol in dtypes:
        got = sdpa(*(t.to(device, dtype) for t in (q, k, v)), False)
        err = (got.double().cpu() - ref).abs().max().item()
        name = str(dtype).removeprefix("torch.")
        if not err <= tol:  # also catches NaN
            return Check(
                "sdpa",
                "FAIL",
                f"scaled_dot_product_attention on {device.type} {name} is {err:.1e} off an explicit softmax",
                "attention has no other fallback: reinstall torch, or try device=cpu to confirm",
            )
        parts.append(f"{name} max err {err:.1e}")
    kernels = ""
    if device.type == "cuda":
        on = [
            n for n in ("flash", "mem_efficient", "cudnn", "math") if getattr(torch.backends.cuda, f"{n}_sdp_enabled")()
        ]
        kernels = f"; kernels enabled: {', '.join(on)}"
    return Check("sdpa", "ok", f"matches an explicit softmax on {device.type} ({', '.join(parts)}){kernels}")


def check_flash(torch: Any, device: Any, name: str, fa3_ok: bool) -> Check:
    from models.attention import MIN_CAPABILITY, probe

    module = "flash_attn_interface" if name == "fa3" else "flash_attn"
    installed = importlib.util.find_spec(module) is not None
    where = f"{module} {'installed' if installed else 'not installed'}"
    install = INSTALL_FA3 if name == "fa3" else INSTALL_FA2
    if device.type != "cuda":
        return Check(name, "info", f"needs a CUDA GPU (running on {device.type}); {where}")
    cap = torch.cuda.get_device_capability(device)
    need = MIN_CAPABILITY[name]
    if cap < need:
        return Check(name, "info", f"needs compute capability >= {need[0]}.{need[1]}, this GPU is {cap[0]}.{cap[1]}")
    if not installed:
        if name == "fa2" and fa3_ok:
            return Check(name, "info", f"{where}; not needed, fa3 works")
        return Check(name, "info", f"{where}: runs use sdpa", f"optional, for faster attention: {install}")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    impl, why = probe(name, device, dtype)
    if impl is None:
        return Check(
            name,
            "warn",
            f"{why}: runs fall back to sdpa",
            f"reinstall it for this torch {torch.__version__} / CUDA {torch.version.cuda} ({install})",
        )
    return Check(name, "ok", f"{module} works on this GPU (matches sdpa in {str(dtype).removeprefix('torch.')})")


def check_swiglu(torch: Any, device: Any) -> Check:
    """The fused SwiGLU Triton kernel (mlp_kernel=auto uses it where this test call passes)."""
    from models import fused

    if device.type != "cuda":
        return Check("swiglu", "info", f"fused kernel needs a CUDA GPU (running on {device.type}): runs use plain")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    why = fused.unavailable_reason(device, dtype)
    if why:
        status = "info" if not fused.HAS_TRITON else "warn"
        return Check("swiglu", status, f"fused kernel unavailable: {why}; runs use plain (~5% slower)")
    return Check("swiglu", "ok", "fused Triton kernel works on this GPU (matches the unfused math)")


def check_optimizer(torch: Any, device: Any) -> Check:
    """One AdamATan2 step from zero state vs its formula (adam_atan2.py's docstring, as the original package):
    at t=1, m = (1 - b1) g and sqrt(v) / sqrt(1 - b2) = |g|, so
    p1 = p0 * (1 - lr*wd) - lr / (1 - b1) * atan2((1 - b1) g, |g|)."""
    import adam_atan2
    from adam_atan2 import AdamATan2

    p0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    g = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    lr, wd, b1 = 0.1, 0.1, 0.9
    expected = p0 * (1 - lr * wd) - lr / (1 - b1) * torch.atan2((1 - b1) * g, g.abs())
    errs = []
    for foreach in (False, True):  # both code paths: single-tensor (CPU default) and multi-tensor (GPU default)
        p = torch.nn.Parameter(p0.to(device, torch.float32).clone())
        p.grad = g.to(device, torch.float32)
        AdamATan2([p], lr=lr, betas=(b1, 0.999), weight_decay=wd, foreach=foreach).step()
        errs.append((p.detach().double().cpu() - expected).abs().max().item())
    where = os.path.abspath(adam_atan2.__file__)
    if os.path.dirname(where) != REPO:
        return Check(
            "optimizer",
            "warn",
            f"adam_atan2 is imported from {where}, not this repo's adam_atan2.py",
            "pip uninstall adam-atan2 (the old CUDA package shadows the pure-PyTorch one)",
        )
    if not max(errs) <= 1e-6:
        return Check(
            "optimizer",
            "FAIL",
            f"one AdamATan2 step on {device.type} is off the formula by {max(errs):.1e}",
            "reinstall torch; report the torch version",
        )
    return Check("optimizer", "ok", f"one AdamATan2 step on {device.type} matches the formula (both code paths)")


def _split_fix(message: str) -> tuple[str, str]:
    """UserError messages read 'problem; fix': show them as detail and fix."""
    problem, sep, fix = message.rpartition("; ")
    return (problem, fix) if sep else (message, "")


def check_data(path: str) -> Check:
    import numpy as np

    from dataset.loader import load_arrays, load_metadata
    from utils.errors import UserError

    try:
        metas, counts = {}, []
        for split in ("train", "test"):
            meta = load_metadata(path, split)
            arrays = load_arrays(path, split, meta)
            n_ex = sum(a["inputs"].shape[0] for a in arrays.values())
            n_puz = sum(a["puzzle_identifiers"].size for a in arrays.values())
            for set_name, a in arrays.items():
                # tokens on a sample of rows (memory-mapped: reading every row of a big set takes too long)
                rows = np.unique(
                    np.linspace(0, a["inputs"].shape[0] - 1, num=min(4096, a["inputs"].shape[0])).astype(int)
                )
                for field in ("inputs", "labels"):
                    sample = np.asarray(a[field][rows])
                    ok = (sample >= 0) & (sample < meta.vocab_size)
                    if field == "labels" and meta.ignore_label_id is not None:
                        ok |= sample == meta.ignore_label_id
                    if sample.size and not ok.all():
                        bad = int(sample[~ok][0])
                        raise UserError(
                            f"{path}/{split}/{set_name}__{field}.npy holds token {bad} outside vocab_size "
                            f"{meta.vocab_size}; rebuild the dataset"
                        )
            metas[split] = meta
            counts.append(f"{split} {meta.total_groups} groups, {n_puz} puzzles, {n_ex} examples")
        tr, te = metas["train"], metas["test"]
        for field in ("seq_len", "vocab_size", "num_puzzle_identifiers"):
            if getattr(tr, field) != getattr(te, field):
                raise UserError(
                    f"{path}: train and test disagree on {field} ({getattr(tr, field)} vs {getattr(te, field)}); "
                    "rebuild the dataset"
                )
    except UserError as e:
        detail, fix = _split_fix(str(e))
        return Check("data", "FAIL", detail, fix)
    return Check("data", "ok", f"{path}: {'; '.join(counts)}; seq {tr.seq_len}, vocab {tr.vocab_size}")


def find_datasets(root: str = "data") -> list[str]:
    return sorted(
        os.path.dirname(os.path.dirname(p)) for p in glob.glob(os.path.join(root, "*", "train", "dataset.json"))
    )


def run_defaults(torch: Any, device: Any, attention: str) -> str:
    from train.runtime import compile_wanted, resolve_forward_dtype

    dtype, _ = resolve_forward_dtype(None, device)
    use_compile, _ = compile_wanted("auto", device)
    return (
        f"device {device.type}, attention {attention}, compile {'on' if use_compile else 'off'}, forward dtype {dtype}"
    )


# ----------------------------------------------------------------------------------------------------------
# Output


class Printer:
    COLORS = {"ok": "32", "info": "36", "skip": "36", "warn": "33", "FAIL": "1;31"}

    def __init__(self) -> None:
        # colour only on a terminal: logs and pipes get plain text
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.checks: list[Check] = []

    def show(self, c: Check) -> None:
        self.checks.append(c)
        status = f"{c.status:<{STATUS_WIDTH}}"
        if self.color:
            status = f"\033[{self.COLORS.get(c.status, '0')}m{status}\033[0m"
        print(f"  {c.name:<{NAME_WIDTH}} {status}  {c.detail}", flush=True)
        if c.fix and c.status != "ok":
            print(f"  {'':<{NAME_WIDTH}} {'':<{STATUS_WIDTH}}  fix: {c.fix}", flush=True)

    def run(self, name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
        """Run one check; a check that crashes becomes a FAIL line (a doctor must not die mid-table)."""
        try:
            out = fn()
        except Exception as e:
            out = Check(name, "FAIL", f"the check itself crashed ({_first_line(e)})", "report this with the output")
        checks = out if isinstance(out, list) else [out]
        for c in checks:
            self.show(c)
        return checks

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)

    def summary(self, seconds: float) -> str:
        counts = [f"{sum(c.status == s for c in self.checks)} {s}" for s in STATUSES]
        return f"summary: {', '.join(counts)} ({seconds:.1f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check the install (Python, torch, GPU, attention, compile, optimizer, W&B, HF hub, datasets).",
    )
    parser.add_argument(
        "data_paths",
        nargs="*",
        metavar="data_path",
        help="dataset folders to check (default: every folder under ./data with train/dataset.json)",
    )
    parser.add_argument("--quick", action="store_true", help="skip the torch.compile check (the slow one)")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    sys.path.insert(0, REPO)  # repo modules resolve from any working directory
    hub = HubProbe()
    out = Printer()
    print(f"HRM doctor: {REPO}", flush=True)
    out.run("python", check_python)
    try:
        import torch
    except Exception as e:
        out.show(Check("torch", "FAIL", f"cannot import torch ({_first_line(e)})", "pip install -r requirements.txt"))
        print(out.summary(time.monotonic() - t0))
        return 1

    from train.runtime import resolve_device

    device, _ = resolve_device("auto")  # the device a run with device=auto would take (cuda, mps or cpu)
    if args.quick:
        skip = "skipped (--quick)"
    elif _env_flag("DISABLE_COMPILE"):
        skip = "skipped: DISABLE_COMPILE is set, runs do not compile"
    else:
        skip = None
    compiler = CompileProbe(device.type, skip)
    try:
        out.run("torch", lambda: check_torch(torch))
        out.run("packages", check_packages)
        out.run("gpu", lambda: check_gpu(torch))
        out.run("sdpa", lambda: check_sdpa(torch, device))
        fa3 = out.run("fa3", lambda: check_flash(torch, device, "fa3", False))
        fa2 = out.run("fa2", lambda: check_flash(torch, device, "fa2", fa3[0].status == "ok"))
        out.run("swiglu", lambda: check_swiglu(torch, device))
        out.run("optimizer", lambda: check_optimizer(torch, device))
        out.run("wandb", check_wandb)
        out.run("hf hub", hub.check)
        paths = args.data_paths or find_datasets()
        if paths:
            for p in paths:
                out.run("data", lambda p=p: check_data(p))
        else:
            out.show(
                Check(
                    "data",
                    "info",
                    f"no dataset folders under {os.path.abspath('data')}",
                    "build one, e.g. python dataset/build_sudoku_dataset.py --generate 1000 --num-aug 1000 "
                    "--output-dir data/sudoku-gen-1k-aug-1000, or pass dataset folders to doctor.py",
                )
            )
        out.run("compile", compiler.check)  # last: it had the whole table's time to finish in the background
    finally:
        compiler.cancel()

    attention = next((c.name for c in fa3 + fa2 if c.status == "ok"), "sdpa")
    print(f"a run here would use: {run_defaults(torch, device, attention)}")
    print(out.summary(time.monotonic() - t0))
    if out.failed:
        print("some checks FAILed: see the fix under each FAIL line")
    return 1 if out.failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
