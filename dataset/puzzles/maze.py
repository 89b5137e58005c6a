"""Maze library for the dataset builder: the HF CSV reader and writer, breadth-first search, an offline generator.

A maze is a square grid of characters (`#` wall, space open, `S` start, `G` goal); its answer is the same grid with
the cells of one shortest path from S to G (S and G themselves excluded) drawn as `o`. Tokens: `# SGo` -> 1..5,
pad 0 (vocab 6). The Hugging Face dataset sapientinc/maze-30x30-hard-1k stores them as CSV rows
`source,question,answer,rating` of 900 characters each, row-major.

Generator (`generate`): a maze made offline, not drawn from the distribution of the HF set (whose generator is not
published with it). A random spanning tree of a 15x15 lattice of cells is carved into a 30x30 wall grid (randomised
depth-first search, which makes long winding corridors), then a random share of the remaining walls between
neighbouring cells is knocked out so that routes loop and the shortest one has to be found among several. S is the
far end of a breadth-first sweep from a random cell; G is a random open cell more than `min_length` moves from S.
The answer draws one shortest path, chosen by a fixed rule (walking back from G, the first neighbour one step nearer
to S in the order up, left, down, right) so the label is a function of the maze.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from utils.errors import UserError

OnBadRow = Literal["stop", "skip"]

CHARSET = "# SGo"  # token = index + 1; 0 is padding
WALL, OPEN, START, GOAL, PATH = (CHARSET.index(c) + 1 for c in CHARSET)
VOCAB_SIZE = len(CHARSET) + 1
SIZE = 30

# Maze-Hard keeps only mazes whose shortest path is longer than 110 moves: the threshold the HRM paper
# (Wang et al., arXiv 2506.21734, section on the Maze-Hard benchmark) gives for its 30x30 hard mazes.
HARD_MIN_MOVES = 111

_CHAR_TOKEN = np.zeros(256, dtype=np.uint8)  # 0 marks a character outside the charset
_CHAR_TOKEN[np.frombuffer(CHARSET.encode(), dtype=np.uint8)] = np.arange(1, len(CHARSET) + 1)
_TOKEN_CHAR = np.frombuffer(b"?" + CHARSET.encode(), dtype=np.uint8)


def encode(texts: list[str]) -> np.ndarray:
    """Equal-length strings over CHARSET -> (N, len) uint8 tokens (0 where a character is not in CHARSET)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.uint8)
    raw = np.frombuffer("".join(texts).encode("latin-1", errors="replace"), dtype=np.uint8)
    return _CHAR_TOKEN[raw].reshape(len(texts), -1)


def decode(tokens: np.ndarray) -> list[str]:
    """(N, L) tokens -> strings (the inverse of `encode`)."""
    tokens = np.atleast_2d(np.asarray(tokens, dtype=np.uint8))
    return [row.tobytes().decode("ascii") for row in _TOKEN_CHAR[tokens]]


# ---------------------------------------------------------------------------------------------------------------
# CSV


@dataclass
class MazeSet:
    """Mazes read from a file: tokens (N, side*side) uint8."""

    inputs: np.ndarray
    labels: np.ndarray
    side: int
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, "file, line n: reason"


def read_hf_csv(
    path: str, on_bad_row: OnBadRow = "stop", side: int | None = None, progress: Callable[[int], object] | None = None
) -> MazeSet:
    """Hugging Face layout: header `source,question,answer,rating`, then one maze per row.

    Every question and answer must be a square grid of the same size (`side`, else the first row's), over CHARSET.
    A bad row stops the read with a UserError naming the file and line, or is dropped and counted (`skip`).
    """
    questions: list[str] = []
    answers: list[str] = []
    skipped, problems = 0, []

    def bad(line: int, reason: str) -> None:
        nonlocal skipped
        if on_bad_row == "stop":
            raise UserError(f"{path}, line {line}: {reason} (pass --on-bad-row skip to drop such rows)")
        skipped += 1
        if len(problems) < 5:
            problems.append(f"{path}, line {line}: {reason}")

    try:
        f = open(path, newline="", encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != ["source", "question", "answer", "rating"]:
                got = "an empty file" if header is None else repr(",".join(header))
                raise UserError(f"{path}, line 1: expected the header 'source,question,answer,rating', got {got}")
            for row in reader:
                line = reader.line_num
                if not any(x.strip() for x in row):
                    continue
                if len(row) != 4:
                    bad(line, f"expected 4 fields (source,question,answer,rating), got {len(row)}")
                    continue
                q, a = row[1], row[2]
                if side is None:
                    side = int(round(len(q) ** 0.5))
                    if side * side != len(q) or side == 0:
                        raise UserError(f"{path}, line {line}: a question of {len(q)} characters is not a square grid")
                if len(q) != side * side or len(a) != side * side:
                    bad(line, f"question/answer have {len(q)}/{len(a)} characters, expected {side * side}")
                    continue
                odd = sorted(set(q + a) - set(CHARSET))
                if odd:
                    bad(line, f"character {odd[0]!r} is not one of {CHARSET!r}")
                    continue
                questions.append(q)
                answers.append(a)
                if progress is not None:
                    progress(1)
        except csv.Error as e:
            raise UserError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    n = side * side if side else 0
    inputs = encode(questions).reshape(-1, n)
    labels = encode(answers).reshape(-1, n)
    return MazeSet(inputs, labels, side or 0, skipped, problems)


def write_hf_csv(path: str, inputs: np.ndarray, labels: np.ndarray, source: str = "generated") -> None:
    """Write mazes (tokens) in the Hugging Face layout that `read_hf_csv` and `--source-dir` take."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["source", "question", "answer", "rating"])
        for q, a in zip(decode(inputs), decode(labels)):
            writer.writerow([source, q, a, int((np.frombuffer(a.encode(), np.uint8) == ord("o")).sum()) + 1])


# ---------------------------------------------------------------------------------------------------------------
# Search


def bfs_distances(open_: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Moves from `start` to every cell, for a batch at once: open_ (B, H, W) bool, start (B,) flat indices ->
    (B, H, W) int32, -1 where unreachable. One 4-neighbour frontier expansion per step for the whole batch."""
    b, h, w = open_.shape
    dist = np.full((b, h, w), -1, dtype=np.int32)
    frontier = np.zeros((b, h, w), dtype=bool)
    frontier[np.arange(b), start // w, start % w] = True
    dist[frontier] = 0
    step = 0
    while frontier.any():
        step += 1
        nxt = np.zeros_like(frontier)
        nxt[:, 1:] |= frontier[:, :-1]
        nxt[:, :-1] |= frontier[:, 1:]
        nxt[:, :, 1:] |= frontier[:, :, :-1]
        nxt[:, :, :-1] |= frontier[:, :, 1:]
        nxt &= open_ & (dist < 0)
        dist[nxt] = step
        frontier = nxt
    return dist


_STEPS = ((-1, 0), (0, -1), (1, 0), (0, 1))  # up, left, down, right: the tie-break order of `trace_paths`


def trace_paths(dist: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(B, H, W) bool: one shortest path per maze, walking back from `goal` (flat index) to the start (distance
    0), each step to the first neighbour in _STEPS order that is one move nearer. Start and goal included."""
    b, h, w = dist.shape
    rows = np.arange(b)
    r, c = goal // w, goal % w
    on_path = np.zeros((b, h, w), dtype=bool)
    on_path[rows, r, c] = True
    d = dist[rows, r, c]
    padded = np.pad(dist, ((0, 0), (1, 1), (1, 1)), constant_values=-1)  # no bounds checks for neighbours
    while (d > 0).any():
        moving = d > 0
        chosen = np.zeros(b, dtype=bool)
        nr, nc = r.copy(), c.copy()
        for dr, dc in _STEPS:
            ok = moving & ~chosen & (padded[rows, r + 1 + dr, c + 1 + dc] == d - 1)
            nr[ok], nc[ok] = r[ok] + dr, c[ok] + dc
            chosen |= ok
        r, c = nr, nc
        d = np.where(moving, d - 1, d)
        on_path[rows[moving], r[moving], c[moving]] = True
    return on_path


# ---------------------------------------------------------------------------------------------------------------
# Generator


def _carve(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Open cells (bool, (2*cells-1)^2) of a maze carved by randomised depth-first search on a cells x cells
    lattice: lattice node (i, j) sits at (2i, 2j), the passage between two nodes at their midpoint."""
    n = 2 * cells - 1
    grid = np.zeros((n, n), dtype=bool)
    # plain Python lists here: this loop runs once per node, and numpy scalar indexing would dominate it
    neighbours = [
        [(i + di) * cells + j + dj for di, dj in _STEPS if 0 <= i + di < cells and 0 <= j + dj < cells]
        for i in range(cells)
        for j in range(cells)
    ]
    visited = [False] * (cells * cells)
    picks = rng.random(cells * cells).tolist()  # one draw per carved passage, drawn up front
    start = int(rng.integers(cells * cells))
    visited[start] = True
    stack, passages, k = [start], [], 0
    while stack:
        node = stack[-1]
        options = [m for m in neighbours[node] if not visited[m]]
        if not options:
            stack.pop()
            continue
        nxt = options[int(picks[k] * len(options))]
        k += 1
        visited[nxt] = True
        passages.append((node, nxt))
        stack.append(nxt)
    grid[::2, ::2] = True  # the search reaches every node
    if passages:
        a, b = np.array(passages).T
        grid[a // cells + b // cells, a % cells + b % cells] = True  # midpoint of nodes (2i, 2j) and (2i', 2j')
    return grid


def _loopy_maze(rng: np.random.Generator, size: int, loop_share: float) -> np.ndarray:
    """(size, size) bool open cells: a carved maze on (size // 2)^2 lattice nodes, placed at a random parity so the
    leftover wall row/column is at either edge, with `loop_share` of the closed passages opened."""
    cells = size // 2
    core = _carve(rng, cells)
    n = core.shape[0]
    # passages are the cells with exactly one odd coordinate; open a share of the closed ones to make loops
    ii, jj = np.indices(core.shape)
    passage = (ii % 2) != (jj % 2)
    closed = passage & ~core
    core |= closed & (rng.random(core.shape) < loop_share)
    grid = np.zeros((size, size), dtype=bool)
    oy, ox = (int(x) for x in rng.integers(0, size - n + 1, size=2))
    grid[oy : oy + n, ox : ox + n] = core
    return grid


def generate(
    n: int,
    rng: np.random.Generator,
    size: int = SIZE,
    min_moves: int = HARD_MIN_MOVES,
    loop_share: tuple[float, float] = (0.05, 0.15),
    batch: int = 256,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """n mazes whose shortest S-G path takes at least `min_moves` moves: (inputs, labels) tokens (n, size*size).

    See the module notes for the construction. Same seed and options give the same mazes."""
    inputs, labels = [], []
    found = tried = 0
    full_batch = batch
    while found < n:
        if tried >= 50 * full_batch and found == 0:
            raise UserError(f"no maze with a shortest path of {min_moves} moves found in {tried} tries; lower it")
        batch = min(full_batch, 2 * (n - found) + 8)  # about half the mazes qualify at the default settings
        shares = rng.uniform(*loop_share, size=batch)
        open_ = np.stack([_loopy_maze(rng, size, s) for s in shares])
        flat = open_.reshape(batch, -1)
        # a random open cell, then the farthest cell from it (one sweep of the usual diameter heuristic) as S
        seed_cell = np.array([rng.choice(np.flatnonzero(f)) for f in flat])
        start = bfs_distances(open_, seed_cell).reshape(batch, -1).argmax(axis=1)
        dist = bfs_distances(open_, start)
        far = dist.reshape(batch, -1) >= min_moves
        keep = np.flatnonzero(far.any(axis=1))[: n - found]
        tried += batch
        if len(keep) == 0:
            continue
        goal = np.array([rng.choice(np.flatnonzero(far[i])) for i in keep])
        path = trace_paths(dist[keep], goal)
        grid = np.where(open_[keep], OPEN, WALL).astype(np.uint8).reshape(len(keep), -1)
        rows = np.arange(len(keep))
        answer = grid.copy()
        answer[path.reshape(len(keep), -1)] = PATH
        for g in (grid, answer):
            g[rows, start[keep]] = START
            g[rows, goal] = GOAL
        inputs.append(grid)
        labels.append(answer)
        found += len(keep)
        if progress is not None:
            progress(len(keep))
    if not inputs:
        return np.zeros((0, size * size), np.uint8), np.zeros((0, size * size), np.uint8)
    return np.concatenate(inputs), np.concatenate(labels)


def dihedral_keys(inputs: np.ndarray) -> list[bytes]:
    """A key per maze (N, side*side tokens) that the 8 symmetries of the square leave unchanged (the smallest of
    its 8 transforms' bytes): two mazes share one iff one is a rotation/reflection of the other, as `--aug` makes."""
    n, cells = np.asarray(inputs).shape
    side = int(round(cells**0.5))
    g = np.asarray(inputs, dtype=np.uint8).reshape(n, side, side)
    forms = [np.rot90(g, k, axes=(1, 2)) for k in range(4)]
    forms += [f.transpose(0, 2, 1) for f in forms]
    flat = [np.ascontiguousarray(f).reshape(n, cells) for f in forms]
    return [min(f[i].tobytes() for f in flat) for i in range(n)]


def check_solution(inputs: np.ndarray, labels: np.ndarray, side: int = SIZE) -> list[str]:
    """Problems with one maze's answer ([] when it is one shortest S-G path drawn over unchanged walls)."""
    q = np.asarray(inputs).reshape(side, side)
    a = np.asarray(labels).reshape(side, side)
    problems = []
    if (q == START).sum() != 1 or (q == GOAL).sum() != 1:
        return ["the maze needs exactly one S and one G"]
    if not np.array_equal(np.where(a == PATH, OPEN, a), q):
        problems.append("the answer changes cells other than drawing o on open cells")
    walkable = q != WALL
    s, g = int(np.flatnonzero(q == START)[0]), int(np.flatnonzero(q == GOAL)[0])
    shortest = int(bfs_distances(walkable[None], np.array([s]))[0].ravel()[g])
    on_path = (a == PATH) | (a == START) | (a == GOAL)
    # a path of k moves has k + 1 cells, and S is joined to G through them iff G is reachable within the path cells
    along = int(bfs_distances(on_path[None], np.array([s]))[0].ravel()[g])
    if along < 0:
        problems.append("the o cells do not join S to G")
    elif int(on_path.sum()) != shortest + 1 or along != shortest:
        problems.append(f"the path has {int(on_path.sum()) - 1} moves, the shortest has {shortest}")
    return problems
