"""Run the original pretrain.py / evaluate.py off-GPU without editing them (stand-in wrapper, not original code).

    HRM_DEVICE=cpu DISABLE_COMPILE=1 python run_original.py pretrain  [hydra overrides...]
    HRM_DEVICE=cpu DISABLE_COMPILE=1 python run_original.py evaluate  checkpoint=PATH/step_N

What is patched, in this process only:
  * torch.Tensor.cuda(...)                -> .to(HRM_DEVICE)
  * `torch` as seen by pretrain.py / evaluate.py is a proxy whose device(), zeros(..., device=),
    load(..., map_location=) map "cuda" to HRM_DEVICE (the real torch module is untouched).
  * torch.utils.data.DataLoader(pin_memory=True) -> pin_memory only when CUDA is available.
  * wandb: mode defaults to "disabled" (WANDB_MODE env var wins); when wandb is not installed, or
    HRM_METRICS_JSONL=path is set, a stub module is installed whose init() sets wandb.run (so that
    all_config.yaml is still written) and whose log() appends {"step": n, "train/...": ...} lines to that path.
HRM_DEVICE defaults to "cuda" (then only the wandb default applies).
"""

import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
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
                f.write(json.dumps({"step": step, **flat}) + "\n")

    w.log = log
    w.Settings = lambda *a, **k: None
    sys.modules["wandb"] = w


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
    sys.path.insert(0, HERE)
    install_wandb_stub()
    proxy = patch_torch()

    import pretrain  # noqa: E402

    if proxy is not None:
        pretrain.torch = proxy
        pretrain.DataLoader = sys.modules["torch.utils.data"].DataLoader

    sys.argv = [os.path.join(HERE, f"{which}.py")] + sys.argv[2:]
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
