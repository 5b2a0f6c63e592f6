"""``goemo push``: share a model folder on the Hugging Face Hub (`goemo.models.hub.push_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from goemo.cli.common import Opt, command


@command(
    "push",
    epilog="Example: goemo push runs/reproduce/best me/goemo-minilm --private --dry-run",
)
def push_command(
    model_dir: Path = typer.Argument(..., help="Model folder: runs/NAME/best, or an export of it."),
    repo_id: str = typer.Argument(..., help="Hub repository, OWNER/NAME (created when missing)."),
    private: bool = Opt(
        False, "--private", help="Create the repository private (an existing one keeps its visibility)."
    ),
    revision: Optional[str] = Opt(None, "--revision", help="Branch to push to (created when missing; default main)."),
    commit_message: Optional[str] = Opt(
        None, "--commit-message", help="Commit message (default: Upload NAME with goemo)."
    ),
    dry_run: bool = Opt(False, "--dry-run", help="List what would be uploaded, and upload nothing."),
) -> None:
    """Upload a model folder (weights, tokenizer, card, thresholds, modeling file) to the Hub.

    The token comes from HF_TOKEN or `hf auth login` (huggingface-cli login) and is never printed.
    Files only --resume needs (optimizer state) and hidden files are not uploaded.
    """
    from goemo.models.hub import push_model  # huggingface_hub's HTTP stack

    result = push_model(
        model_dir, repo_id, private=private, revision=revision, commit_message=commit_message, dry_run=dry_run
    )
    where = (
        f"{result.repo_id} ({'private' if result.private else 'public'}, revision {result.revision or 'main'}) "
        f"on {result.endpoint}"
    )
    if result.dry_run:
        token = "found" if result.token_found else "not found (set HF_TOKEN or run `hf auth login`)"
        typer.echo(f"dry run: would push {result.folder} to {where}; token: {token}")
        for f in result.files:
            typer.echo(f"  {f.path}  {f.size} bytes")
        typer.echo(f"{len(result.files)} files, {result.total_bytes / 2**20:.1f} MiB; nothing uploaded")
        return
    typer.echo(
        f"pushed {len(result.files)} files ({result.total_bytes / 2**20:.1f} MiB) from {result.folder} to {where}"
    )
    typer.echo(f"commit: {result.url}")
