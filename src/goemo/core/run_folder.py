"""The run folder's layout, and the rules that keep one run from clobbering another.

``runs/NAME/``: ``config.yaml`` (resolved), ``metrics.jsonl``, ``summary.json``, ``best/``
(model folder), ``last/`` (model folder + optimizer/scheduler/RNG state for ``--resume``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from goemo.core.config import RESUMABLE_FIELDS
from goemo.core.errors import RunFolderError

if TYPE_CHECKING:
    from goemo.core.config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"  # in last/: optimizer, scheduler and RNG state (torch.save, loaded weights_only)

# Fields that may change between an interrupted run and its resumption (a different machine,
# more threads, …) without changing what is trained: those marked ``resumable`` in TrainConfig.
_RESUMABLE_CHANGES = frozenset(RESUMABLE_FIELDS)


class RunFolder:
    """Paths inside one run folder.

    >>> RunFolder("runs/x").best_dir.as_posix()
    'runs/x/best'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    best_dir = property(lambda self: self.path / "best")
    last_dir = property(lambda self: self.path / "last")
    predictions_dir = property(lambda self: self.path / "predictions")

    def has_checkpoint(self) -> bool:
        return (self.last_dir / STATE_FILE).is_file()

    def prepare(self, config: TrainConfig, is_main: bool = True) -> Path | None:
        """Check the folder against --resume/--overwrite; return ``last/`` when resuming.

        Raises `RunFolderError` when the folder holds another run and neither flag is given,
        or when ``--resume`` would continue a run trained with different settings.
        """
        if config.resume and config.overwrite:
            raise RunFolderError("--resume and --overwrite contradict each other; choose one")
        occupied = self.path.is_dir() and any(self.path.iterdir())
        if not occupied:
            if is_main:
                self.path.mkdir(parents=True, exist_ok=True)
            return None
        if config.resume:
            if not self.has_checkpoint():
                log.info("%s has no checkpoint yet: starting from the beginning", self.path)
                return None
            self._check_same_run(config)
            return self.last_dir
        if config.overwrite:
            if is_main:
                for child in self.path.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            return None
        raise RunFolderError(
            f"output folder {self.path} already holds a run; pass --resume to continue it, "
            f"--overwrite to replace it, or choose another --output"
        )

    def _check_same_run(self, config: TrainConfig) -> None:
        if not self.config_path.is_file():
            return
        saved = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        current = config.to_dict()
        changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k, current[k]) != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise RunFolderError(
                f"cannot resume {self.path}: settings differ from the saved run ({details}); "
                f"use the same settings or --overwrite"
            )
