"""Hugging Face downloads for the builders: the cached copy first, a quick reachability check, one clear error."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from utils.errors import UserError


def _hub_unreachable() -> str | None:
    """A reason when the Hub's host cannot even be resolved/connected: fails in seconds where the client would
    retry for ~25 s. Skipped (None) behind a proxy, where a direct connection says nothing."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE")):
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=10).close()
    except OSError as e:
        return f"cannot reach {host}: {e.strerror or e}"
    return None


def download(repo: str, split: str, offline_hint: str) -> str:
    """Local path of `<split>.csv` of the HF dataset (cached copy first); UserError naming the offline options."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line message
    try:
        return hf_hub_download(repo, f"{split}.csv", repo_type="dataset", local_files_only=True)
    except Exception:
        pass
    reason = _hub_unreachable()
    if reason is None:
        try:
            return hf_hub_download(repo, f"{split}.csv", repo_type="dataset")
        except Exception as e:  # the client raises many types (HTTP, offline mode, missing repo or file)
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            reason = f"{type(e).__name__}: {first_line}"
    raise UserError(
        f"could not download {split}.csv of the Hugging Face dataset {repo} ({reason}). "
        "Offline, use --source-dir DIR (a folder holding train.csv and test.csv in that layout) "
        f"or {offline_hint}"
    )


def check_source_dir(source_dir: str, splits: tuple[str, ...]) -> None:
    """`--source-dir` must be a folder holding `<split>.csv` for every split, in the HF layout."""
    if not os.path.isdir(source_dir):
        raise UserError(f"--source-dir {source_dir} is not a folder")
    missing = [f"{s}.csv" for s in splits if not os.path.isfile(os.path.join(source_dir, f"{s}.csv"))]
    if missing:
        raise UserError(
            f"--source-dir {source_dir} lacks {' and '.join(missing)} (HF layout: source,question,answer,rating)"
        )
