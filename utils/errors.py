"""User-facing errors: one clear line naming the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config, bad data). Printed without a traceback."""


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' or '' when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


def exit_with(err: BaseException, code: int = 2) -> NoReturn:
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(code)


def load_error(e: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (its own messages run to paragraphs)."""
    text = str(e).strip()
    if "Weights only load failed" in text:
        return f"{type(e).__name__}: it holds Python objects, not only tensors; refused, nothing in it was run"
    return f"{type(e).__name__}: {text.splitlines()[0][:160] if text else 'empty or truncated file'}"


def load_tensors(path: str, refused: str, mmap: bool = False) -> Any:
    """torch.load of a file the user named, with weights_only=True (a crafted file cannot run code). A file
    torch refuses is one UserError: `refused` with {path} and {why} filled in. mmap: memory-map it (large
    prediction files need not fit in RAM), falling back to a plain read for torch's legacy format."""
    import torch  # here: the dataset tools import this module without torch

    try:
        with warnings.catch_warnings():  # torch warns about a crafted file's pickle protocol before refusing it
            warnings.simplefilter("ignore")
            if mmap:
                try:
                    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # files in torch's legacy format cannot be memory-mapped
                    pass
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(refused.format(path=path, why=load_error(e))) from None


# Out of memory: torch is imported inside these, as the dataset tools import this module without it.


def is_oom(e: BaseException) -> bool:
    """Out of memory on the GPU, or on the CPU: torch's allocator raises a RuntimeError
    ("[enforce fail at alloc_cpu.cpp:...] DefaultCPUAllocator: can't allocate memory"), numpy a MemoryError."""
    import torch

    return isinstance(e, torch.OutOfMemoryError | MemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(e)


def oom_message(e: BaseException, device: torch.device, local: int, micro: int, eval_batch: int | None = None) -> str:
    """What to set after running out of memory: training `micro` of `local` examples per process per step, or
    (`eval_batch` given) evaluating batches of `eval_batch`; with the memory figures of the device."""
    import torch

    figures = ""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        figures = (
            f" (GPU {torch.cuda.get_device_name(device)}: {total / 2**30:.1f} GiB, {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB "
            f"allocated by this run, {free / 2**30:.1f} GiB free)"
        )
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        figures = (
            f" (CPU memory: {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB in this machine)"
        )
    first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    where = "GPU memory" if device.type == "cuda" else "memory"
    if eval_batch is not None:
        return (
            f"out of {where} while evaluating batches of {eval_batch}{figures}. Set eval_batch_size={max(1, eval_batch // 2)} "
            f"(same metrics, less memory); close other programs. {first}"
        )
    half = max(1, micro // 2)
    while local % half:
        half -= 1
    return (
        f"out of {where} at {micro} examples per forward pass{figures}. "
        f"Set micro_batch_size={half} (same results, less memory) or lower global_batch_size; "
        f"close other programs{' on the GPU' if device.type == 'cuda' else ''}. {first}"
    )


@contextmanager
def out_of_memory_explained(
    device: torch.device, local: int, micro: int, eval_batch: int | None = None
) -> Iterator[None]:
    """Running out of memory inside becomes a UserError naming the setting to change (`oom_message`); any
    other error passes unchanged."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not is_oom(e):
            raise
        raise UserError(oom_message(e, device, local, micro, eval_batch)) from None
