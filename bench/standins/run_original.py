"""Run the original pretrain.py / evaluate.py off-GPU without editing them (stand-in wrapper, not original code).
TRM's pretrain.py (a fork of the original's) runs the same way.

    HRM_DEVICE=cpu DISABLE_COMPILE=1 python run_original.py pretrain  [hydra overrides...]
    HRM_DEVICE=cpu DISABLE_COMPILE=1 python run_original.py evaluate  checkpoint=PATH/step_N
    HRM_CHECKOUT=trm-orig python bench/standins/run_original.py pretrain [...]   (without copying this file there)

What is patched, in this process only:
  * torch.Tensor.cuda(...)                -> .to(HRM_DEVICE)
  * `torch` as seen by pretrain.py / evaluate.py is a proxy whose device(), zeros(..., device=),
    load(..., map_location=) map "cuda" to HRM_DEVICE (the real torch module is untouched).
  * torch.utils.data.DataLoader(pin_memory=True) -> pin_memory only when CUDA is available.
  * wandb: mode defaults to "disabled" (WANDB_MODE env var wins); when wandb is not installed, or
    HRM_METRICS_JSONL=path is set, a stub module is installed whose init() sets wandb.run (so that
    all_config.yaml is still written) and whose log() appends {"step": n, "elapsed_s": s, "train/...": ...} lines
    to that path; elapsed_s: wall seconds since HRM_CLOCK_START (a time.time() value; default: this script's start).
  * argdantic (TRM's puzzle_dataset.py imports it, only its command line uses it): an empty stand-in when missing.
HRM_DEVICE defaults to "cuda" (then only the wandb default applies). HRM_CHECKOUT: the checkout to run (default:
the folder of this file, where the stand-ins were copied); the stand-ins beside this file are found either way.
"""

import os
import sys
import time
import types

# The wall clock of the stand-in's metrics: the command's start, as the fork's elapsed_s (time to accuracy)
START = float(os.environ.get("HRM_CLOCK_START") or time.time())
HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.abspath(os.environ.get("HRM_CHECKOUT") or HERE)
DEVICE = os.environ.get("HRM_DEVICE", "cuda")


def _map(dev):
    if dev is None:
        return dev
    if isinstance(dev, str) and dev.split(":")[0] == "cuda":
        return DEVICE
    return dev


def install_wandb_stub():
    if not os.environ.get("HRM_METRICS_JSONL"):  # metrics to a file need the stub, even with wandb installed
        try:
            import wandb  # noqa: F401

            os.environ.setdefault("WANDB_MODE", "disabled")
            return
        except ImportError:
            pass
    w = types.ModuleType("wandb")
    w.run = None

    class _Run:
        def log_code(self, *a, **k):
            pass

    def init(*a, **k):
        w.run = _Run()
        return w.run

    def finish(*a, **k):
        w.run = None

    w.init, w.finish = init, finish

    def log(metrics, step=None, **k):
        # stand-in logging: HRM_METRICS_JSONL=path appends {"step": n, ...} per call (W&B's place)
        path = os.environ.get("HRM_METRICS_JSONL")
        if path:
            import json

            flat = {}
            for key, v in metrics.items():
                if isinstance(v, dict):
                    flat.update({f"{key}/{kk}": float(vv) for kk, vv in v.items()})
                else:
                    flat[key] = float(v)
            with open(path, "a") as f:
                f.write(json.dumps({"step": step, "elapsed_s": round(time.time() - START, 3), **flat}) + "\n")

    w.log = log
    w.Settings = lambda *a, **k: None
    sys.modules["wandb"] = w


def install_argdantic_stub():
    try:
        import argdantic  # noqa: F401
    except ImportError:
        a = types.ModuleType("argdantic")

        class ArgParser:
            def __init__(self, *a, **k):
                raise RuntimeError("argdantic is not installed (stand-in): pip install argdantic for this command line")

        a.ArgParser = ArgParser
        sys.modules["argdantic"] = a


def patch_torch():
    import torch
    import torch.utils.data

    if DEVICE.split(":")[0] == "cuda":
        return None

    torch.Tensor.cuda = lambda self, *a, **k: self.to(DEVICE)

    _DL = torch.utils.data.DataLoader

    class DataLoader(_DL):
        def __init__(self, *a, pin_memory=False, **k):
            super().__init__(*a, pin_memory=pin_memory and torch.cuda.is_available(), **k)

    torch.utils.data.DataLoader = DataLoader

    class TorchProxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    proxy = TorchProxy("torch")
    proxy.device = lambda dev, *a: torch.device(_map(dev), *a)

    def zeros(*a, device=None, **k):
        return torch.zeros(*a, device=_map(device), **k)

    def load(*a, map_location=None, **k):
        return torch.load(*a, map_location=_map(map_location), **k)

    proxy.zeros, proxy.load = zeros, load
    return proxy


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("pretrain", "evaluate"):
        print(__doc__)
        sys.exit(2)
    which = sys.argv[1]
    if HERE != CHECKOUT:  # run from the fork's bench/standins: the fork's own packages (models, utils) must not be
        # found, e.g. through PYTHONPATH; TRM's have no __init__.py, and a regular package beats those anywhere on the path
        fork = os.path.dirname(os.path.dirname(HERE))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != fork]
    sys.path[:0] = [CHECKOUT] + ([HERE] if HERE != CHECKOUT else [])  # its code first, then the stand-ins
    install_wandb_stub()
    install_argdantic_stub()
    proxy = patch_torch()

    import pretrain  # noqa: E402

    if proxy is not None:
        pretrain.torch = proxy
        pretrain.DataLoader = sys.modules["torch.utils.data"].DataLoader

    sys.argv = [os.path.join(CHECKOUT, f"{which}.py")] + sys.argv[2:]
    if which == "pretrain":
        # hydra resolves config_path="config" relative to the task function's file only when its
        # module is __main__ (otherwise it looks for a python package named `config`)
        pretrain.launch.__wrapped__.__module__ = "__main__"
        pretrain.launch()
    else:
        import evaluate  # noqa: E402

        if proxy is not None:
            evaluate.torch = proxy
        evaluate.launch()


if __name__ == "__main__":
    main()
