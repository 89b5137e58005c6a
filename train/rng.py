"""Random streams of the training loop, kept apart so that resuming replays them exactly.

ACT exploration (`torch.rand_like` in models/hrm/hrm_act_v1.py) draws from the device's default generator,
and so did every DataLoader iterator (its base seed): a run resumed mid-pass builds one iterator more than
the uninterrupted run, which shifted every later exploration draw on the CPU. Now the loaders draw from a
generator of their own, and exploration runs on its own generator state, swapped into the default
generator for the training forward only. Swapping (rather than passing `generator=` to the model) keeps
the model's code the original's and keeps torch.compile's graph whole (a Generator argument breaks it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def derived_seed(seed: int, rank: int, stream: int) -> int:
    """A 63-bit seed for one stream of one rank, independent of the others."""
    return int(np.random.SeedSequence([seed, rank, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


LOADER_STREAM, EXPLORE_STREAM, GLOBAL_STREAM = 1, 2, 3


def seed_everything(seed: int, rank: int) -> None:
    """The run's `seed` into every global generator, once at start: torch's (CPU and every GPU: the initial
    weights, the puzzle-embedding table's included, are drawn on the CPU from it, as before: seed + rank), Python's
    `random` and numpy's (nothing in training draws from these two today; seeded so that nothing added later
    does unseeded). The other streams are seeded where they are made: the loader's batches (dataset/loader.py,
    from (seed, pass)), ACT exploration (ExploreRNG), the DataLoader's generator (loader_generator); the weight
    average (train/ema.py) draws nothing."""
    torch.manual_seed(seed + rank)
    state = derived_seed(seed, rank, GLOBAL_STREAM)
    random.seed(state)
    np.random.seed(state % 2**32)


def loader_generator(seed: int, rank: int) -> torch.Generator:
    """For DataLoader(generator=...): its draws seed worker processes only (batches come from the dataset's own
    numpy generators, seeded by (seed, pass)), so it needs no saving; it just keeps the global RNG untouched."""
    return torch.Generator().manual_seed(derived_seed(seed, rank, LOADER_STREAM))


def _default_generator(device: torch.device) -> torch.Generator | None:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    if device.type == "cpu":
        return torch.default_generator
    return None  # e.g. MPS: exploration stays on the global stream, saved with the other RNG states


class ExploreRNG:
    """The exploration stream of one rank: a generator state of the model's device type."""

    def __init__(self, seed: int, rank: int, device: torch.device) -> None:
        self.default = _default_generator(device)
        self.gen: torch.Generator | None = None
        if self.default is not None:
            self.gen = torch.Generator(device=self.default.device)
            self.gen.manual_seed(derived_seed(seed, rank, EXPLORE_STREAM))

    def state_dict(self) -> dict[str, Any] | None:
        if self.gen is None:
            return None
        return {"device": self.gen.device.type, "state": self.gen.get_state()}

    def load_state_dict(self, sd: dict[str, Any] | None) -> None:
        """A state of another device type (saved on a GPU, resumed on the CPU) keeps the fresh seeded stream."""
        if (
            self.gen is not None
            and sd is not None
            and sd.get("state") is not None
            and sd["device"] == self.gen.device.type
        ):
            self.gen.set_state(sd["state"])

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside: the device's default generator *is* the exploration stream (host-side state, no sync)."""
        if self.gen is None or self.default is None:
            yield
            return
        outer = self.default.get_state()
        self.default.set_state(self.gen.get_state())
        try:
            yield
        finally:
            self.gen.set_state(self.default.get_state())
            self.default.set_state(outer)
