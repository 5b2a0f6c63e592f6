"""Share a model folder on the Hugging Face Hub: `push_model`, behind ``goemo push``.

Uploads what makes the folder a model anyone can load (weights or ``model.onnx``, tokenizer,
``config.json`` with the thresholds, ``goemo.json``, the model card ``README.md``, and for
goemo's mean-pooling head ``modeling_goemo.py``) through huggingface_hub's public API
(`HfApi.create_repo`, `HfApi.upload_folder`). What only resuming training needs (``last/``'s
optimizer and loop state, the weight average) and hidden files stay home.

The token is huggingface_hub's own (``HF_TOKEN``, else the one ``hf auth login`` /
``huggingface-cli login`` stored); it is never printed. ``dry_run=True`` says exactly what would
be uploaded and touches no network.

    plan = push_model("runs/reproduce/best", "me/goemo-minilm", dry_run=True)
    [f.path for f in plan.files][:3]
    # -> ['README.md', 'config.json', 'goemo.json']
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from goemo.core.errors import ConfigError, GoemoError, ModelError
from goemo.core.folder import CARD_FILE, CONFIG_FILE, ModelFolder
from goemo.core.run_folder import ACCELERATE_STATE_FILES, STATE_FILE, TRAINER_STATE_FILE

DEFAULT_ENDPOINT = "https://huggingface.co"
# Only `--resume` needs these (last/): optimizer/scheduler/RNG state, the loop's position, the weight average.
RESUME_ONLY_FILES = (STATE_FILE, TRAINER_STATE_FILE, "ema.safetensors", *ACCELERATE_STATE_FILES)  # names or patterns
LOGIN_HINT = "set HF_TOKEN or run `hf auth login` (formerly `huggingface-cli login`)"


class HubError(GoemoError):
    """The Hub could not be reached, or refused the upload."""


@dataclass(frozen=True)
class PushFile:
    """One file to upload: its path inside the folder (and the repo) and its size in bytes."""

    path: str
    size: int


@dataclass
class PushResult:
    """What `push_model` uploaded (or, with ``dry_run``, would upload)."""

    folder: Path
    repo_id: str
    private: bool
    revision: str | None
    endpoint: str
    token_found: bool
    files: list[PushFile] = field(default_factory=list)
    dry_run: bool = False
    url: str | None = None  # the commit's URL once pushed

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def files_to_push(folder: str | Path) -> list[PushFile]:
    """The files of ``folder`` an upload takes, sorted by path: all but hidden files, caches,
    temporary files and what only resuming training needs (`RESUME_ONLY_FILES`)."""
    root = Path(folder)
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.is_symlink():
            continue
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if any(rel.match(name) for name in RESUME_ONLY_FILES) or rel.suffix == ".tmp":
            continue
        out.append(PushFile(rel.as_posix(), path.stat().st_size))
    return out


def check_pushable(folder: str | Path) -> ModelFolder:
    """The opened model folder, or `ModelError` in one line when it is no model folder or lacks
    its model card or ``config.json``."""
    opened = ModelFolder.open(folder)
    _ = opened.kind  # raises when the folder holds no weights, no ONNX graph and no TF-IDF model
    missing = [name for name in (CARD_FILE, CONFIG_FILE) if not (opened.path / name).is_file()]
    if missing:
        raise ModelError(
            f"{opened.path}: no {' or '.join(missing)}; push a folder goemo wrote at the end of training "
            f"(runs/NAME/best) or by `goemo export`"
        )
    return opened


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
) -> PushResult:
    """Upload a model folder to the Hub repo ``repo_id`` (created when missing, ``private`` if asked).

    ``revision`` is a branch (created from main when missing); ``dry_run`` lists the files and
    uploads nothing. Network and Hub errors become one `HubError` line.

        push_model("runs/reproduce/best", "me/goemo-minilm", private=True)
        # -> PushResult(..., url='https://huggingface.co/me/goemo-minilm/commit/…')
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"repo id {repo_id!r}: {str(e).splitlines()[0]} (expected NAME or OWNER/NAME)") from None
    folder = check_pushable(model_dir)
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    try:
        token = get_token()
    except Exception as e:  # OIDC token exchange, unreadable token file: one line, never the token
        raise HubError(f"cannot read the Hugging Face token ({type(e).__name__}); {LOGIN_HINT}") from None
    result = PushResult(
        folder=folder.path,
        repo_id=repo_id,
        private=private,
        revision=revision,
        endpoint=endpoint,
        token_found=token is not None,
        files=files_to_push(folder.path),
        dry_run=dry_run,
    )
    if dry_run:
        return result
    if token is None:
        raise HubError(f"no Hugging Face token found: {LOGIN_HINT}")
    api = HfApi(endpoint=endpoint)
    message = commit_message or f"Upload {folder.path.name} with goemo"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder.path,
            commit_message=message,
            revision=revision,
            allow_patterns=[glob.escape(f.path) for f in result.files],
        )
    except OfflineModeIsEnabled:
        raise HubError("HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to push") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = f"; check the token ({LOGIN_HINT}) and that it may write to {repo_id}" if status in (401, 403) else ""
        raise HubError(f"the Hub refused the push to {repo_id}: {_first_line(e)}{hint}") from None
    except Exception as e:  # connection refused, DNS, TLS, timeouts: the transport's own types
        raise HubError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(e).__name__}: {_first_line(e)}); "
            f"check the network, HF_ENDPOINT and proxies, then push again"
        ) from None
    result.url = str(getattr(commit, "commit_url", "") or f"{endpoint}/{repo_id}")
    return result


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
