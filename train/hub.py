"""Hugging Face Hub ids: `hf://org/name[@revision]` to the local folder of that model, downloaded through
huggingface_hub's own cache (HF_HOME / HF_HUB_CACHE; with HF_HUB_OFFLINE=1 the cache only, no network).

Here, under the training code, because evaluate.py and the API read `checkpoint=hf://...` through
train/weights.model_source; publishing and the `python -m hrm.hub` command are hrm/hub.py's.
"""

from __future__ import annotations

import os
import re

from utils.errors import UserError

HF_PREFIX = "hf://"
# A repo id as the Hub accepts it: `name` or `org/name`, letters, digits, '-', '_', '.'; a revision is a branch,
# tag or commit (no spaces, no '..').
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_REVISION = re.compile(r"[A-Za-z0-9._/-]+")
# What a model folder holds: ours (published here) or the original's released checkpoints. Nothing else is
# downloaded, so a repo with extra large files costs no more than its weights.
FILES = ["model.safetensors", "config.json", "README.md", "checkpoint", "all_config.yaml"]


def is_hub_id(source: str) -> bool:
    return isinstance(source, str) and source.startswith(HF_PREFIX)


def parse(source: str) -> tuple[str, str | None]:
    """`hf://org/name[@revision]` -> (repo id, revision or None)."""
    if not is_hub_id(source):
        raise UserError(f"{source!r} is not a Hub id; write hf://<org>/<name>[@revision]")
    rest = source.removeprefix(HF_PREFIX)
    repo_id, _, revision = rest.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or (revision and (not _REVISION.fullmatch(revision) or ".." in revision)):
        raise UserError(f"{source!r} is not a Hub id; write hf://<org>/<name> or hf://<org>/<name>@<branch|tag|commit>")
    if "@" in rest and not revision:
        raise UserError(f"{source!r} names no revision after '@'; write hf://{repo_id} or hf://{repo_id}@<revision>")
    return repo_id, revision or None


def resolve(source: str, cache_dir: str | None = None) -> str:
    """The local folder of a Hub model, downloaded into the Hub cache when it is not there yet (offline with
    HF_HUB_OFFLINE=1: the cache only)."""
    repo_id, revision = parse(source)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise UserError("huggingface_hub is not installed; pip install huggingface_hub") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=FILES)
    except GatedRepoError:
        raise UserError(
            f"{source}: the repository is gated; accept its terms on the Hub, then `hf auth login`"
        ) from None
    except RevisionNotFoundError:
        raise UserError(
            f"{source}: no revision {revision!r} in {repo_id}; give a branch, tag or commit it has"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{source}: no such model repository on the Hub (or it is private: `hf auth login` first)"
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise UserError(
            f"{source} is not in the Hub cache and {why}; download it once where the Hub is reachable "
            f"(python -m hrm.hub fetch {source}), or give a local model folder"
        ) from None
    except OSError as e:  # network errors that are not LocalEntryNotFoundError, a cache we cannot write
        raise UserError(f"{source}: download failed ({str(e).splitlines()[0][:160]})") from None
    if not any(os.path.isfile(os.path.join(folder, n)) for n in ("model.safetensors", "checkpoint")):
        raise UserError(
            f"{source} holds no model weights (neither model.safetensors nor checkpoint); is it a model of this project?"
        )
    return folder
