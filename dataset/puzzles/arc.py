"""ARC library for the dataset builder and the scorer: reading task files, augmentation, canvas placement, decoding.

Tokens: pad 0, eos 1, colours 0-9 -> 2..11 (vocab 12) on a 30x30 canvas (seq 900). A grid sits at a row/column
offset; an eos run marks the row just below it and the column just right of it (where those fit on the canvas),
which is how a model's answer is cut back out (`crop`).

Random stream. The builder draws from one legacy `np.random.RandomState(seed)` in exactly the order and with exactly
the calls of the original builder (shuffle per subfolder, then per task its augmentation trials; afterwards per
train puzzle the choice of the example left in place and the offsets of the others). Given the same task order the
output is byte-for-byte the original's; the task order here is sorted by name, where the original took the
filesystem's listing order (and, through set ordering, PYTHONHASHSEED decided whether the train or the test split
was numbered and placed first). Speed comes from doing everything except those draws on whole arrays:
- duplicate augmentations are found with exact byte keys instead of sha256 hex digests (same equalities);
- all offsets of one puzzle come from one `randint` call with an array of bounds: the legacy generator draws such a
  call element by element in order, with the same rejection sampling per bound as a scalar call, so it yields the
  original's separate calls' values and leaves the stream in the same state (the builder's tests check the result
  against the original's arrays);
- grids are written onto the canvas for all augmentations of a task at once with fancy indexing.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from dataset.puzzles.dihedral import dihedral_transform, inverse_dihedral_transform
from utils.errors import UserError

OnBadRow = Literal["stop", "skip"]

GRID = 30  # canvas side; also the largest grid side accepted
SEQ_LEN = GRID * GRID
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 10 + 2  # pad + eos + colours 0-9
RETRIES_FACTOR = 5  # augmentation trials per wanted augmentation before a task gives up (as the original)
TEST_FOLDER = "evaluation"  # the subfolder whose test pairs form the test split

_TRANSPOSING = (1, 3, 6, 7)  # dihedral ids that swap height and width
_AUG_NAME = re.compile(r"^(?P<base>.*)_t(?P<t>[0-7])_(?P<perm>\d{10})$")


class BadTask(ValueError):
    """A task file that cannot be used; the message says where in the file."""


# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class Task:
    """One ARC task. `pairs` keeps the file's key order (some files list `test` before `train`, and the original
    kept that order for the examples of a puzzle); `from_test[i]` says which list pair i came from."""

    name: str
    path: str
    evaluation: bool
    pairs: list[tuple[np.ndarray, np.ndarray]]
    from_test: list[bool]
    held_out: bool = False  # a training task whose test pairs form its puzzle in the val split, not in train
    _transformed: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)

    def transformed(self, tid: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """All pairs under dihedral transform `tid` (cached: augmentation and placement both need them)."""
        if tid not in self._transformed:
            self._transformed[tid] = [(dihedral_transform(a, tid), dihedral_transform(b, tid)) for a, b in self.pairs]
        return self._transformed[tid]

    def split_pairs(self, split: str) -> list[int]:
        """Indices of the pairs that are examples of this task's puzzle in `split` (empty: no puzzle there). A
        training task's pairs are all train examples, unless it is `held_out`: then its test pairs are val's."""
        if not self.evaluation:
            if split == "train":
                return [i for i, t in enumerate(self.from_test) if not (t and self.held_out)]
            return [i for i, t in enumerate(self.from_test) if t] if split == "val" and self.held_out else []
        if split not in ("train", "test"):
            return []
        want_test = split == "test"
        return [i for i, t in enumerate(self.from_test) if t == want_test]


def parse_grid(obj: object, where: str) -> np.ndarray:
    """A JSON grid (list of equal-length rows of ints 0-9, at most 30x30) -> uint8 array; BadTask otherwise."""
    if not isinstance(obj, list) or not obj or not all(isinstance(row, list) and row for row in obj):
        raise BadTask(f"{where}: a grid must be a non-empty list of non-empty rows")
    try:
        arr = np.array(obj)
    except ValueError:
        raise BadTask(f"{where}: rows of different lengths") from None
    if arr.ndim != 2:
        raise BadTask(f"{where}: rows of different lengths or nested too deep")
    if arr.dtype.kind not in "iu":
        raise BadTask(f"{where}: values must be integers 0-9")
    h, w = arr.shape
    if h > GRID or w > GRID:
        raise BadTask(f"{where}: grid is {h}x{w}, over {GRID}x{GRID}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 9:
        raise BadTask(f"{where}: value {lo if lo < 0 else hi} outside 0-9")
    return arr.astype(np.uint8)


def read_task(path: str, default_name: str, evaluation: bool) -> Task:
    """Read and check one task file. The optional `name` key overrides the file stem as the task's name."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise BadTask(f"malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise BadTask("not UTF-8 text") from None
    except OSError as e:
        raise BadTask(f"cannot read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise BadTask("expected a JSON object with 'train' and 'test' lists")
    name = data.pop("name", default_name)
    if not isinstance(name, str) or not name:
        raise BadTask("'name' must be a non-empty string")
    missing = [k for k in ("train", "test") if k not in data]
    if missing:
        raise BadTask(f"missing key {' and '.join(repr(k) for k in missing)}")
    extra = sorted(set(data) - {"train", "test"})
    if extra:
        raise BadTask(f"unexpected key {extra[0]!r} (expected 'train', 'test' and an optional 'name')")
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    from_test: list[bool] = []
    for key, examples in data.items():
        if not isinstance(examples, list):
            raise BadTask(f"'{key}' must be a list of {{input, output}} pairs")
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict) or "input" not in ex or "output" not in ex:
                raise BadTask(f"{key}[{i}]: expected an object with 'input' and 'output'")
            pairs.append((parse_grid(ex["input"], f"{key}[{i}].input"), parse_grid(ex["output"], f"{key}[{i}].output")))
            from_test.append(key == "test")
    task = Task(name, path, evaluation, pairs, from_test)
    for split in ("train", "test") if evaluation else ("train",):
        if not task.split_pairs(split):
            key = "test" if split == "test" else "train"
            raise BadTask(f"'{key}' is empty, so the task has no {split} puzzle")
    return task


@dataclass
class ReadReport:
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped files, "path: reason"
    KEEP: ClassVar[int] = 5


def task_folders(dataset_dir: str) -> list[tuple[str, list[str]]]:
    """(subfolder name, its *.json task files) for each subfolder of `dataset_dir`, both sorted by name.

    Files directly in `dataset_dir` and deeper folders are not read (as the original)."""
    try:
        subdirs = sorted((e for e in os.scandir(dataset_dir) if e.is_dir()), key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"cannot list {dataset_dir}: {e.strerror or e}") from None
    out = []
    for sub in subdirs:
        files = sorted(
            e.path
            for e in os.scandir(sub.path)
            if e.name.endswith(".json") and not e.name.startswith(".") and e.is_file()
        )
        out.append((sub.name, files))
    return out


def read_folder(files: list[str], evaluation: bool, on_bad_row: OnBadRow, report: ReadReport) -> list[Task]:
    """The usable tasks among `files`; a bad file stops with a UserError naming it, or is counted in `report`."""
    tasks = []
    for path in files:
        try:
            tasks.append(read_task(path, os.path.splitext(os.path.basename(path))[0], evaluation))
        except BadTask as e:
            if on_bad_row == "stop":
                raise UserError(f"{path}: {e} (pass --on-bad-row skip to leave such files out)") from None
            report.skipped += 1
            if len(report.problems) < report.KEEP:
                report.problems.append(f"{path}: {e}")
    return tasks


# ---------------------------------------------------------------------------------------------------------------
# Augmentation


def aug_name(base: str, tid: int, mapping: np.ndarray) -> str:
    """`<id>_t<k>_<perm>`: dihedral id k, then the colour each of 0..9 becomes (0 always stays 0)."""
    return f"{base}_t{tid}_{(np.asarray(mapping, dtype=np.uint8) + ord('0')).tobytes().decode()}"


def puzzle_names(base: str, plans: list[tuple[int, np.ndarray]]) -> list[str]:
    """Identifier names of a task's puzzles: the task's own name for the first (un-augmented) one."""
    return [base] + [aug_name(base, tid, mapping) for tid, mapping in plans[1:]]


def parse_aug_name(name: str) -> tuple[str, int, np.ndarray | None]:
    """(task name, dihedral id, colour mapping) from an identifier; (name, 0, None) for an un-augmented one."""
    m = _AUG_NAME.match(name)
    if m is None:
        return name, 0, None
    return m["base"], int(m["t"]), np.frombuffer(m["perm"].encode(), dtype=np.uint8) - ord("0")


def augment_grid(grid: np.ndarray, tid: int, mapping: np.ndarray | None) -> np.ndarray:
    """Recolour, then apply dihedral transform `tid` (the order the builder uses)."""
    return dihedral_transform(grid if mapping is None else mapping[grid], tid)


def inverse_augment_grid(grid: np.ndarray, tid: int, mapping: np.ndarray | None) -> np.ndarray:
    """Undo `augment_grid`: inverse transform, then map each colour back (argsort of a permutation inverts it)."""
    grid = inverse_dihedral_transform(np.asarray(grid), tid)
    return grid if mapping is None else np.argsort(mapping).astype(np.uint8)[grid]


class _KeyMaker:
    """Exact, order-free keys of an augmented task: equal keys <=> equal multisets of (input, output) pairs.

    For each dihedral id the task's pairs are laid out once as one flat byte array, each grid preceded by its
    height and width stored as 100 + side (never a colour, so recolouring leaves them alone). A trial then costs
    one table lookup over that array, slicing into pairs and sorting the slices.
    """

    def __init__(self, task: Task) -> None:
        self.flat: list[np.ndarray] = []
        self.bounds: list[list[tuple[int, int]]] = []
        for tid in range(8):
            parts, bounds, pos = [], [], 0
            for pair in task.transformed(tid):
                start = pos
                for g in pair:
                    parts += [np.array([100 + g.shape[0], 100 + g.shape[1]], dtype=np.uint8), g.ravel()]
                    pos += 2 + g.size
                bounds.append((start, pos))
            self.flat.append(np.concatenate(parts))
            self.bounds.append(bounds)
        self.table = np.arange(256, dtype=np.uint8)

    def key(self, tid: int, mapping: np.ndarray) -> bytes:
        self.table[:10] = mapping
        raw = self.table[self.flat[tid]].tobytes()
        return b"".join(sorted(raw[s:e] for s, e in self.bounds[tid]))


def augment_task(task: Task, rs: np.random.RandomState, num_aug: int) -> list[tuple[int, np.ndarray]]:
    """(dihedral id, colour mapping) of the task's puzzles: the identity first, then up to `num_aug` distinct
    augmentations found within RETRIES_FACTOR * num_aug trials (fewer when the task has fewer distinct ones)."""
    identity = np.arange(10, dtype=np.uint8)
    plans = [(0, identity)]
    if num_aug <= 0:
        return plans
    keys = _KeyMaker(task)
    seen = {keys.key(0, identity)}
    colours = np.arange(1, 10, dtype=np.uint8)
    for _ in range(RETRIES_FACTOR * num_aug):
        # the original's two draws per trial, in its order: transform id, then a permutation of colours 1-9
        tid = int(rs.randint(0, 8))
        mapping = np.concatenate([identity[:1], rs.permutation(colours)])
        k = keys.key(tid, mapping)
        if k not in seen:
            seen.add(k)
            plans.append((tid, mapping))
            if len(plans) > num_aug:
                break
    return plans


# ---------------------------------------------------------------------------------------------------------------
# Placement on the canvas


@functools.cache
def _frame(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For an h x w grid at offset (0, 0): its cells' positions; the positions of its eos cells (the row below,
    then the column to the right); how far the offset may go before each eos cell falls off the canvas; and
    whether each eos cell is in the row below (moves with the row offset) or the column (column offset)."""
    r, c = np.divmod(np.arange(h * w), w)
    eos_pos = np.concatenate([h * GRID + np.arange(w), np.arange(h) * GRID + w])
    room = np.concatenate([np.full(w, GRID - h), np.full(h, GRID - w)])
    return r * GRID + c, eos_pos, room, np.arange(w + h) < w


class _Cells:
    """Where the grids of a puzzle's examples go on the canvas under one dihedral transform, all examples at once:
    per grid cell its example, colour and position at offset (0, 0); the same for the eos cells (see `_frame`)."""

    def __init__(self, grids: list[np.ndarray]) -> None:
        frames = [_frame(*g.shape) for g in grids]
        idx = np.arange(len(grids))
        self.ex = np.repeat(idx, [g.size for g in grids])
        self.values = np.concatenate([g.ravel() for g in grids])
        self.pos = np.concatenate([f[0] for f in frames])
        self.eos_ex = np.repeat(idx, [len(f[1]) for f in frames])
        self.eos_pos = np.concatenate([f[1] for f in frames])
        self.eos_room = np.concatenate([f[2] for f in frames])
        self.eos_down = np.concatenate([f[3] for f in frames])


class TaskCanvas:
    """Writes all puzzles of one task in one split onto the canvas; also draws their example offsets."""

    def __init__(self, task: Task, split: str) -> None:
        self.task = task
        self.index = task.split_pairs(split)
        self.n = len(self.index)
        examples = [task.pairs[i] for i in self.index]
        # largest side of input and output per example, untransposed: (n, 2)
        sides = np.array([[max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])] for a, b in examples])
        self._highs = {False: GRID - sides + 1, True: GRID - sides[:, ::-1] + 1}
        self._cells: dict[int, tuple[_Cells, _Cells]] = {}
        self._bounds: dict[tuple[bool, int], np.ndarray] = {}

    def cells(self, tid: int) -> tuple[_Cells, _Cells]:
        if tid not in self._cells:
            pairs = self.task.transformed(tid)
            self._cells[tid] = (_Cells([pairs[i][0] for i in self.index]), _Cells([pairs[i][1] for i in self.index]))
        return self._cells[tid]

    def _offset_bounds(self, tid: int, kept: int) -> np.ndarray:
        """Exclusive upper bounds of the (row, column) offsets of the examples other than `kept`, in the order the
        original drew them: row then column, example by example."""
        key = (tid in _TRANSPOSING, kept)
        if key not in self._bounds:
            self._bounds[key] = np.delete(self._highs[key[0]], kept, axis=0).ravel().astype(np.int64)
        return self._bounds[key]

    def draw_offsets(self, plans: list[tuple[int, np.ndarray]], rs: np.random.RandomState) -> np.ndarray:
        """(K, n, 2) row/column offsets: per puzzle one example stays at (0, 0), the others get random offsets."""
        kept, draws = [], []
        for tid, _ in plans:
            k = int(rs.randint(0, self.n))
            kept.append(k)
            # one call for all of a puzzle's offsets: an array of bounds draws element by element, in order
            draws.append(rs.randint(0, self._offset_bounds(tid, k)))
        out = np.zeros((len(plans), self.n, 2), dtype=np.int64)
        moved = np.ones((len(plans), self.n), dtype=bool)
        moved[np.arange(len(plans)), kept] = False
        out[moved] = np.concatenate(draws).reshape(-1, 2)  # row-major: puzzle by puzzle, examples in order
        return out

    def write(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        row0: int,
        plans: list[tuple[int, np.ndarray]],
        offsets: np.ndarray | None,
    ) -> int:
        """Write the K puzzles x n examples from row `row0` (puzzle-major); return the next free row."""
        tids = np.array([t for t, _ in plans])
        tokens = np.stack([m for _, m in plans]).astype(np.uint8) + COLOUR_OFFSET  # (K, 10) colour -> token
        if offsets is None:
            offsets = np.zeros((len(plans), self.n, 2), dtype=np.int64)
        flat_in, flat_lab = inputs.reshape(-1), labels.reshape(-1)  # 1-D scatter: cheaper than 2-D fancy indexing
        for tid in np.unique(tids):
            ks = np.flatnonzero(tids == tid)
            first = ((row0 + ks * self.n) * SEQ_LEN)[:, None]  # flat index of each puzzle's first example
            off = offsets[ks]
            shift = off[:, :, 0] * GRID + off[:, :, 1]  # (|ks|, n)
            for flat, c in zip((flat_in, flat_lab), self.cells(int(tid))):
                flat[first + c.ex * SEQ_LEN + c.pos + shift[:, c.ex]] = tokens[ks][:, c.values]
                along = np.where(c.eos_down, off[:, c.eos_ex, 0], off[:, c.eos_ex, 1])
                eos = first + c.eos_ex * SEQ_LEN + c.eos_pos + shift[:, c.eos_ex]
                flat[eos[along < c.eos_room]] = EOS
        return row0 + len(plans) * self.n


# ---------------------------------------------------------------------------------------------------------------
# Decoding model output


def crop_sizes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heights and widths of the grids at the top left of many 900-token canvases ((N, 900) -> two (N,) arrays):
    the largest top-left rectangle of colour tokens, which is what the eos frame delimits in a well-formed answer
    (the original notebook's rule); (0, 0) when the first token is not a colour."""
    canvas = np.asarray(tokens).reshape(-1, GRID, GRID)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < COLOUR_OFFSET + 10)
    # length of the colour run that starts each row, narrowed to the narrowest run so far
    runs = np.where(is_colour.all(axis=2), GRID, np.argmin(is_colour, axis=2))
    widths = np.minimum.accumulate(runs, axis=1)
    areas = np.arange(1, GRID + 1) * widths
    best = np.argmax(areas, axis=1)  # the first of equal areas, as the notebook's strict '>'
    rows = np.arange(len(canvas))
    empty = areas[rows, best] == 0
    return np.where(empty, 0, best + 1), np.where(empty, 0, widths[rows, best])


def crop(tokens: np.ndarray) -> np.ndarray:
    """The grid (colours 0-9, uint8) of one 900-token canvas; see `crop_sizes`."""
    (h,), (w,) = crop_sizes(tokens)
    return (np.asarray(tokens).reshape(GRID, GRID)[:h, :w] - COLOUR_OFFSET).astype(np.uint8)
