"""The Hugging Face Hub: fetch a model by `hf://org/name[@revision]`, and publish one.

    python -m hrm.hub publish checkpoints/<project>/<run>/step_N <org>/<name> [--private] [--revision BRANCH]
    python -m hrm.hub fetch hf://<org>/<name>[@revision]        # prints the local folder

Fetching goes through huggingface_hub's own cache (HF_HOME / HF_HUB_CACHE), so a model downloaded once loads
offline afterwards (HF_HUB_OFFLINE=1 reads the cache and never touches the network). The folder it returns is
what `hrm.load`, predict.py and evaluate.py read: either a folder this module published (model.safetensors,
config.json, README.md) or one of the original's released checkpoints (`checkpoint` + `all_config.yaml`, e.g.
hf://sapientinc/HRM-checkpoint-sudoku-extreme).

Publishing exports the checkpoint with `hrm.export` (weights as safetensors, the config with what inference needs),
writes a model card beside it (recipe, data, the scores at that step with the protocol each was measured under, and
the command that reproduces the run), then creates the repository and uploads the folder in one commit.
`--dry-run` stops before the network and leaves the folder to look at.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import tempfile
from typing import Any

from hrm import CODE_ROOT
from train.hub import HF_PREFIX, is_hub_id, parse, resolve  # noqa: F401  (fetching: hrm.hub.resolve for users)
from utils.errors import UserError, exit_with

# ---- publishing --------------------------------------------------------------------------------------------------

# Keys of a run that say where it ran, not what it trained: left out of the reproducing command.
_PLACE_KEYS = {"checkpoint_path", "run_name", "project_name", "resume", "wandb_mode", "recipe", "data_path"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


CONFIG_DIR = os.path.join(CODE_ROOT, "config")  # the checkout's config/, or the wheel's hrm/_lib/config


def arch_group(arch_name: str | None) -> str | None:
    """The config/arch/<group>.yaml whose model is `arch_name` (each group names its own model class)."""
    import yaml

    for file in sorted(os.listdir(os.path.join(CONFIG_DIR, "arch"))):
        with open(os.path.join(CONFIG_DIR, "arch", file)) as f:
            if (yaml.safe_load(f) or {}).get("name") == arch_name:
                return file.removesuffix(".yaml")
    return None


def composed_config(overrides: list[str]) -> dict[str, Any]:
    """What `python pretrain.py <overrides>` composes (PretrainConfig's defaults, the recipe, the arch group)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from train.config import register_defaults

    register_defaults()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return OmegaConf.to_container(compose("cfg_pretrain", overrides=overrides), resolve=True)  # type: ignore[return-value]


def reproduce_command(config: dict[str, Any]) -> str:
    """`python pretrain.py recipe=... data_path=... key=value ...`: every key where the run differs from what its
    recipe (and arch group) compose, so the command trains the same config."""
    recipe = config.get("recipe")
    overrides = [f"recipe={recipe}"] if recipe else []
    base = composed_config(overrides)
    arch_name = (config.get("arch") or {}).get("name")
    if base["arch"].get("name") != arch_name and (group := arch_group(arch_name)):
        overrides.append(f"arch={group}")
        base = composed_config(overrides)
    args = [*overrides, f"data_path={config.get('data_path')}"]
    ran, composed = _flatten(config), _flatten(base)
    unknown = []
    for key in sorted(ran):
        if key.split(".")[0] in _PLACE_KEYS or (key in composed and composed[key] == ran[key]):
            continue
        value = ran[key]
        text = "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        # a key this version's config no longer has would be refused by pretrain.py: said beside, not passed
        (args if key in composed else unknown).append(f"{key}={text}")
    command = shlex.join(["python", "pretrain.py", *args])
    return command + (f"  # trained with keys this version lacks: {' '.join(unknown)}" if unknown else "")


def eval_scores(run_dir: str, step: int) -> list[tuple[str, str]]:
    """(what, value) for the evaluation the run logged at `step` (metrics.jsonl), each with its split and
    protocol: the paper's (every puzzle runs all halt_max_steps segments) and where the Q head halts."""
    path = os.path.join(run_dir, "metrics.jsonl")
    row: dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: the rows before it stand
                if r.get("step") == step and any(k.endswith("exact_accuracy") for k in r if not k.startswith("train/")):
                    row.update(r)
    labels = [
        ("all/exact_accuracy", "test exact accuracy, paper protocol (all ACT segments)"),
        ("all/exact_accuracy_at_halt", "test exact accuracy where the Q head halts"),
        ("all/accuracy", "test token accuracy, paper protocol"),
        ("val/all/exact_accuracy", "val exact accuracy, paper protocol"),
        ("val/all/exact_accuracy_at_halt", "val exact accuracy where the Q head halts"),
    ]
    return [(label, f"{100 * float(row[key]):.1f}%") for key, label in labels if key in row]


def model_card(config: dict[str, Any], step: int, scores: list[tuple[str, str]], weights: str) -> str:
    arch = config.get("arch") or {}
    lines = [
        "---",
        "library_name: pytorch",
        "tags: [recursive-reasoning, hrm, trm, sudoku, maze, arc]",
        "---",
        "",
        f"# {config.get('run_name') or 'a recursive reasoning model'}",
        "",
        f"Model `{arch.get('name')}`, recipe `{config.get('recipe') or 'none (keys on the command line)'}`, "
        f"trained on `{config.get('data_path')}` to step {step:,}; weights: {weights}.",
        "",
        "## Scores at this step",
        "",
    ]
    if scores:
        lines += ["| what | value |", "| --- | --- |", *[f"| {what} | {value} |" for what, value in scores]]
    else:
        lines.append("No evaluation was logged at this step (the run's metrics.jsonl has none): no score is claimed.")
    lines += [
        "",
        "Scores are the run's own evaluation at this step, as logged during training; a searched or voted figure "
        "is never the headline.",
        "",
        "## Use",
        "",
        "```python",
        "import hrm",
        f'solver = hrm.load("{HF_PREFIX}<org>/<name>")',
        'print(solver.solve(["<81 characters, . for blanks>"]).grids[0])',
        "```",
        "",
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(config),
        "```",
        "",
    ]
    return "\n".join(lines)


def publish(
    source: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    out_dir: str | None = None,
    dry_run: bool = False,
    api: Any = None,
) -> str:
    """Export `source` (a step_N file or a run folder), write its model card, and upload the folder to `repo_id`
    in one commit. Returns the folder (dry run) or the repository's URL."""
    import hrm

    parse(HF_PREFIX + repo_id + (f"@{revision}" if revision else ""))  # the same rules as fetching
    if "/" not in repo_id:
        raise UserError(f"repo id {repo_id!r} needs its owner: <user or org>/{repo_id}")
    folder = out_dir or tempfile.mkdtemp(prefix="hrm-publish-")
    if os.path.isdir(folder) and os.listdir(folder):
        raise UserError(f"{folder} is not empty; give an empty or new folder for the export")
    hrm.export(source, folder)
    with open(os.path.join(folder, "config.json")) as f:
        exported = json.load(f)
    config = exported.get("config", exported)
    # which checkpoint the export took ("step_N" or "step_N.ema"), and its run folder: where its scores are logged
    found = re.fullmatch(r"step_(\d+)(\.ema)?", str(exported.get("source", "")))
    step = int(found.group(1)) if found else -1
    run_dir = os.fspath(source) if os.path.isdir(source) else os.path.dirname(os.fspath(source))
    card = model_card(config, step, eval_scores(run_dir, step), exported.get("weights", "as saved"))
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(card)
    if dry_run:
        return folder
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=f"{config.get('run_name') or 'model'} at step {step}",
        )
    except OSError as e:  # HTTP errors (no login, no rights) are OSErrors in huggingface_hub
        raise UserError(
            f"publishing to {repo_id} failed ({str(e).splitlines()[0][:160]}); `hf auth login` with a write token, "
            f"check the owner name; the export is kept in {shlex.quote(folder)}"
        ) from None
    return f"https://huggingface.co/{repo_id}" + (f"/tree/{revision}" if revision else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hrm.hub", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="export a checkpoint with its model card and upload it")
    pub.add_argument("checkpoint", help="<run folder>/step_N, or a run folder (its newest checkpoint)")
    pub.add_argument("repo_id", help="<user or org>/<name> on the Hub")
    pub.add_argument("--private", action="store_true", help="create the repository private")
    pub.add_argument("--revision", help="a branch to upload to (created if missing); default main")
    pub.add_argument("--out", help="where to write the export (default: a new temporary folder)")
    pub.add_argument("--dry-run", action="store_true", help="write the export and card, upload nothing")
    fetch = sub.add_parser("fetch", help="download a model into the Hub cache and print its folder")
    fetch.add_argument("source", help="hf://<org>/<name>[@revision]")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(resolve(args.source))
        return
    where = publish(
        args.checkpoint, args.repo_id, private=args.private, revision=args.revision, out_dir=args.out,
        dry_run=args.dry_run,
    )  # fmt: skip
    print(
        f"{'export and model card written to' if args.dry_run else 'published:'} {shlex.quote(where) if args.dry_run else where}"
    )


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        exit_with(e)
