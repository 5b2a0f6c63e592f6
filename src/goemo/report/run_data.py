"""Read what `goemo train` left in a run folder: config, summary, per-epoch metrics."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from goemo.core.errors import RunFolderError, json_problem

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """A run folder's records; missing files give empty values, never errors (a crashed run
    can still be reported as far as it got), except a missing model folder."""

    path: Path
    model_dir: Path
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def best_epoch(self) -> int | None:
        value = self.summary.get("best_epoch")
        if value is None:
            best = [r["epoch"] for r in self.epochs if r.get("best")]
            value = best[-1] if best else None
        return None if value is None else int(value)

    @classmethod
    def load(cls, path: str | Path) -> RunData:
        """Open ``path`` (a run folder) and its best model.

        run = RunData.load("runs/tiny")
        [r["epoch"] for r in run.epochs]
        # -> [1, 2]
        """
        run = Path(path)
        if not run.is_dir():
            raise RunFolderError(f"{run}: no such run folder")
        model_dir = run / "best"
        if not (model_dir / "config.json").is_file():
            raise RunFolderError(f"{run}: no trained model in best/ (expected a run folder written by `goemo train`)")
        out = cls(run, model_dir)
        config_path = run / "config.yaml"
        if config_path.is_file():
            out.config_text = config_path.read_text(encoding="utf-8")
            try:
                out.config = yaml.safe_load(out.config_text) or {}
            except yaml.YAMLError as e:
                log.warning("%s: unreadable YAML (%s); shown as text only", config_path, e)
        summary_path = run / "summary.json"
        if summary_path.is_file():
            try:
                out.summary = json.loads(summary_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise RunFolderError(f"{summary_path}:{e.lineno}: invalid JSON: {json_problem(e)}") from None
        out.epochs = epoch_records(run / "metrics.jsonl") or list(out.summary.get("epochs", []))
        return out


def epoch_records(path: str | Path) -> list[dict[str, Any]]:
    """The ``event == "epoch"`` records of a metrics.jsonl, one per epoch, in epoch order.

    A resumed run logs an epoch again when it redoes it; the last record of each epoch is the
    one whose weights were kept, so it wins. A torn last line (a killed process) is skipped.

        epoch_records("runs/tiny/metrics.jsonl")[-1]["epoch"]
        # -> 2
    """
    path = Path(path)
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON (a torn write?); skipped", path, number)
            continue
        if isinstance(record, dict) and record.get("event") == "epoch" and "epoch" in record:
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[k] for k in sorted(by_epoch)]
