"""The peers side by side with this fork: the original HRM and TRM's own code, each with its published Sudoku recipe
(ours: config/recipe/paper-sudoku.yaml and trm-sudoku.yaml, the same keys), on one data folder, one after the other,
each for at most N minutes. Each writes <out>/<peer>/metrics.jsonl with wall seconds since its command started
(`elapsed_s`, as our runs do), for bench/records_table.py.

    git clone https://github.com/sapientinc/HRM orig
    git clone https://github.com/SamsungSAILMontreal/TinyRecursiveModels trm-orig
    python bench/peers.py --data data/sudoku-mix-v2-1k-aug-1000 --orig orig --trm trm-orig --minutes 25 --out results/peers
    python bench/records_table.py results/peers/* checkpoints/<project>/<our run>

Nothing in the checkouts is edited or copied in: bench/standins/run_original.py runs their pretrain.py with our
stand-ins (SDPA for FlashAttention, AdamATan2 in PyTorch, W&B as JSON lines; argdantic for TRM) found beside it.
`--set key=value` adds an override to every peer, `--set trm:key=value` to one (e.g. eval_interval=1000 for
evaluations as often as ours). HRM_DEVICE=cpu DISABLE_COMPILE=1 run them on the CPU (tests, tiny settings only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from train.config import recipe_arch  # noqa: E402
from utils.errors import UserError, exit_with  # noqa: E402

RUNNER = REPO / "bench" / "standins" / "run_original.py"


@dataclass(frozen=True)
class Peer:
    name: str  # folder under --out and the row's label
    recipe: str  # config/recipe/<recipe>.yaml: the keys passed to the peer
    repo: str  # where its code comes from (for the error message)
    list_data: bool  # TRM: data_paths=[...] and evaluators=[] (its ARC evaluator needs numba and ARC data)


PEERS = {
    "orig": Peer("hrm-original", "paper-sudoku", "https://github.com/sapientinc/HRM", list_data=False),
    "trm": Peer("trm-original", "trm-sudoku", "https://github.com/SamsungSAILMontreal/TinyRecursiveModels", True),
}


def hydra_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def recipe_overrides(recipe: str) -> list[str]:
    """config/recipe/<recipe>.yaml as `key=value` overrides the peers' Hydra CLIs read (the same key names)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "config" / "recipe" / f"{recipe}.yaml"))
    assert isinstance(cfg, dict)
    arch = recipe_arch(recipe)
    out = [f"arch={arch}"] if arch else []
    for k, v in cfg.items():
        if k in ("defaults", "recipe"):
            continue
        if isinstance(v, dict):
            out += [f"{k}.{kk}={hydra_value(vv)}" for kk, vv in v.items()]
        else:
            out.append(f"{k}={hydra_value(v)}")
    return out


def trm_data_view(data: Path, out: Path) -> Path:
    """TRM's loader needs `total_puzzles` in dataset.json (its Sudoku builder writes total_groups there; with one
    data path it only weighs a mean over paths): a folder of links to `data` with that key added."""
    for split in ("train", "test"):
        src, dst = data / split, out / split
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.name != "dataset.json" and not (dst / f.name).exists():
                (dst / f.name).symlink_to(f.resolve())
        meta = json.loads((src / "dataset.json").read_text())
        meta.setdefault("total_puzzles", meta["total_groups"])
        (dst / "dataset.json").write_text(json.dumps(meta))
    for f in data.iterdir():  # identifiers.json and the like
        if f.is_file() and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    return out


def peer_command(peer: Peer, data: Path, run_dir: Path, extra: list[str]) -> list[str]:
    if peer.list_data:
        data_args = [f"data_paths=[{trm_data_view(data, run_dir / 'data')}]", "evaluators=[]"]
    else:
        data_args = [f"data_path={data}"]
    names = [f"+project_name={data.name}-peers", f"+run_name={peer.name}", f"+checkpoint_path={run_dir / 'ckpt'}"]
    return [
        sys.executable,
        str(RUNNER),
        "pretrain",
        *data_args,
        *recipe_overrides(peer.recipe),
        *extra,
        *names,
        f"hydra.run.dir={run_dir / 'hydra'}",  # Hydra's log folder, out of the checkout
    ]


def git_commit(checkout: Path) -> str | None:
    r = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def run_peer(peer: Peer, checkout: Path, data: Path, out: Path, minutes: float, extra: list[str]) -> dict:
    """Run one peer for at most `minutes` (then SIGTERM to its process group, SIGKILL 60 s later)."""
    run_dir = out / peer.name
    if (run_dir / "metrics.jsonl").exists():
        raise UserError(f"{run_dir / 'metrics.jsonl'} exists already; choose another --out or remove {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = peer_command(peer, data, run_dir, extra)
    start = time.time()
    env = {
        **os.environ,
        "HRM_CHECKOUT": str(checkout),
        "HRM_METRICS_JSONL": str(run_dir / "metrics.jsonl"),
        "HRM_CLOCK_START": repr(start),
        "PYTHONUNBUFFERED": "1",
    }
    info = {
        "peer": peer.name,
        "recipe": peer.recipe,
        "checkout": str(checkout),
        "commit": git_commit(checkout),
        "command": cmd[1:],
        "started": datetime.datetime.fromtimestamp(start).isoformat(timespec="seconds"),
        "minutes": minutes,
    }
    print(f"{peer.name} ({peer.recipe}, {info['commit'] or 'not a git checkout'}): up to {minutes:g} min", flush=True)
    with open(run_dir / "log.txt", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=minutes * 60)
            info["stopped_at_time_limit"] = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the peer and its data-loader workers (its own session)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            info["stopped_at_time_limit"] = True
    info |= {"returncode": rc, "wall_s": round(time.time() - start, 1)}
    (run_dir / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    if rc != 0 and not info["stopped_at_time_limit"]:
        print(f"  {peer.name} failed (exit {rc}); its output: {run_dir / 'log.txt'}", flush=True)
    else:
        print(f"  {peer.name}: {info['wall_s']:.0f} s, metrics in {run_dir / 'metrics.jsonl'}", flush=True)
    return info


def split_sets(sets: list[str]) -> dict[str, list[str]]:
    """`key=value` for every peer, `orig:key=value` / `trm:key=value` for one."""
    out: dict[str, list[str]] = {k: [] for k in PEERS}
    for s in sets:
        head, sep, rest = s.partition(":")
        if sep and head in PEERS and "=" in rest:
            out[head].append(rest)
        elif "=" in s:
            for k in out:
                out[k].append(s)
        else:
            raise UserError(f"--set {s!r}: expected key=value or <peer>:key=value (peers: {', '.join(PEERS)})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset folder (e.g. data/sudoku-mix-v2-1k-aug-1000)")
    p.add_argument("--orig", type=Path, help="checkout of the original HRM (sapientinc/HRM)")
    p.add_argument("--trm", type=Path, help="checkout of TRM (SamsungSAILMontreal/TinyRecursiveModels)")
    p.add_argument("--minutes", type=float, default=25.0, help="wall-time limit of each peer (default 25)")
    p.add_argument("--out", type=Path, default=Path("results/peers"))
    p.add_argument("--set", action="append", default=[], metavar="[PEER:]KEY=VALUE", help="extra override")
    a = p.parse_args(argv)
    try:
        checkouts = {k: getattr(a, k) for k in PEERS if getattr(a, k) is not None}
        if not checkouts:
            raise UserError("give --orig <checkout of the original HRM> and/or --trm <checkout of TRM>")
        if not (a.data / "train" / "dataset.json").is_file() or not (a.data / "test" / "dataset.json").is_file():
            raise UserError(f"{a.data} is not a dataset folder (no train/ and test/ dataset.json); build it first")
        for k, c in checkouts.items():
            if not (c / "pretrain.py").is_file():
                raise UserError(f"--{k} {c}: no pretrain.py there; give a checkout of {PEERS[k].repo}")
        if not (math.isfinite(a.minutes) and a.minutes > 0):  # nan and inf too: a limit must be a number of minutes
            raise UserError(f"--minutes must be a positive number of minutes, got {a.minutes:g}")
        extra = split_sets(a.set)
        infos = [
            run_peer(PEERS[k], c.resolve(), a.data.resolve(), a.out.resolve(), a.minutes, extra[k])
            for k, c in checkouts.items()
        ]
    except UserError as e:
        exit_with(e)
    failed = [i["peer"] for i in infos if i["returncode"] != 0 and not i["stopped_at_time_limit"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
