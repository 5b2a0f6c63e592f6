"""``goemo audit``: cross-fitted fold models, their out-of-fold probabilities, and the audit folder.

Texts go to K folds by a hash of their id (`goemo.data.folds.fold_of`, as ``--holdout-fold``).
Fold model k is an ordinary run in ``OUT/folds/fold-k/`` trained without fold k, which it then
predicts into ``out_of_fold.npz``; `score_audit` gathers the K files and ranks every pair.
Nothing is trained twice: a finished fold with the same settings and texts is reused, a killed
one resumes, another is refused (``--overwrite`` trains it again). The folder's files are
listed in docs/audit.md.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goemo import __version__
from goemo.audit.page import render_review_page
from goemo.audit.quality import LabelQuality, label_quality
from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.core.fileio import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text
from goemo.core.folder import ModelFolder
from goemo.core.run_folder import RunFolder
from goemo.data.folds import fold_of
from goemo.data.source import DataSource
from goemo.data.split import Split
from goemo.predict.cache import predict_split
from goemo.training.data import Cleaning, clean_train, prepare_splits
from goemo.training.loop import train

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
FOLDS_DIR = "folds"
OOF_FILE = "out_of_fold.npz"
ISSUES_FILE = "label_issues.csv"
PAGE_FILE = "review.html"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
AUDIT_FILE = "audit.json"
ISSUE_COLUMNS = ("id", "text", "label", "given", "score", "kind", "rank", "probability")


@dataclass(frozen=True)
class AuditData:
    """The texts an audit scores, and the split its fold models select on (train when dev is audited)."""

    audited: Split
    select: Split
    split: str
    source: DataSource
    cleaning: Cleaning | None = None


@dataclass(frozen=True)
class FoldResult:
    """One fold: its run folder, whether it was trained now (False: reused), and its held-out texts."""

    fold: int
    folds: int
    run_dir: Path
    trained: bool
    texts: int
    seconds: float


@dataclass(frozen=True)
class AuditResult:
    """The audit folder's paths and the numbers `goemo audit` prints."""

    out: Path
    quality: LabelQuality
    texts: int
    folds: int
    flagged: dict[str, int]
    files: dict[str, Path]


def load_audit_data(config: TrainConfig, split: str = "train") -> AuditData:
    """The audited and the selection split from the config's data source (cleaned and sampled as training would)."""
    source = DataSource.from_config(config.to_dict())
    select = "train" if split == "dev" else "dev"
    if (config.exclude or config.corrections) and split != "train":
        raise ConfigError(f"--exclude and --corrections clean the train split; --split {split} audits another")
    if source.kind == "files" and select not in source.files:
        raise ConfigError(
            f"--{select} FILE is needed: the fold models choose their epoch on the {select} split, "
            f"not on the texts they are audited on"
        )
    splits = source.splits([split, select])
    missing = [name for name in (split, select) if name not in splits]
    if missing:
        raise ConfigError(
            f"{source.describe()} has no {' or '.join(missing)} split (the audit needs {split} and {select})"
        )
    holder = {"train": splits[split], "dev": splits[select]}
    cleaning = clean_train(config, holder) if split == "train" else None
    audited = holder["train"]
    if config.max_train_samples:
        audited = audited.sample(config.max_train_samples, seed=config.seed)
    if len(audited) == 0:
        raise ConfigError(f"the {split} split has no texts to audit")
    return AuditData(audited, splits[select], split, source, cleaning)


def fold_dir(out: str | Path, fold: int) -> Path:
    """``OUT/folds/fold-K``: fold K's run folder.

    >>> fold_dir("runs/audit", 2).as_posix()
    'runs/audit/folds/fold-2'
    """
    return Path(out) / FOLDS_DIR / f"fold-{fold}"


def fold_config(config: TrainConfig, out: str | Path, fold: int, folds: int) -> TrainConfig:
    """``config`` holding fold ``fold`` out, in its own run folder; the split is already cleaned (`load_audit_data`)."""
    return config.replace(
        holdout_fold=fold,
        num_folds=folds,
        output=str(fold_dir(out, fold)),
        exclude=None,
        corrections=None,
        resume=False,
    )


def train_fold(
    config: TrainConfig, out: str | Path, fold: int, folds: int = DEFAULT_FOLDS, data: AuditData | None = None
) -> FoldResult:
    """Train (or reuse, or resume) fold ``fold`` of ``folds``, then predict the texts it held out."""
    _check_folds(fold, folds)
    started = time.perf_counter()
    data = data or load_audit_data(config, "train")
    fc = fold_config(config, out, fold, folds)
    run = RunFolder(fc.output)
    expected = prepare_splits(fc, _fold_splits(data))["train"].checksum()  # as the loop will record it
    trained = True
    if config.overwrite:
        train(fc, splits=_fold_splits(data))
    elif run.summary_path.is_file() and (run.best_dir / "goemo.json").is_file():
        _check_fold(run, fc, run.best_dir, expected)
        trained = False
        log.info("fold %d of %d: reusing the finished run %s", fold, folds, run.path)
    else:
        if run.has_checkpoint():
            _check_fold(run, fc, run.last_dir, expected)
            log.info("fold %d of %d: resuming %s", fold, folds, run.path)
        train(fc.replace(resume=True), splits=_fold_splits(data))
    part = _held_out(data, fold, folds)
    _predict_fold(config, run, part)
    return FoldResult(fold, folds, run.path, trained, len(part), time.perf_counter() - started)


def run_audit(config: TrainConfig, out: str | Path, folds: int = DEFAULT_FOLDS, split: str = "train") -> AuditResult:
    """Every fold (`train_fold`), then the scores (`score_audit`); run again, it continues where it stopped."""
    _check_folds(0, folds)
    data = load_audit_data(config, split)
    for k in range(folds):
        result = train_fold(config, out, k, folds, data)
        log.info("fold %d of %d: %d held-out texts predicted (%.0f s)", k, folds, result.texts, result.seconds)
    return score_audit(config, out, folds, split, data)


def score_audit(
    config: TrainConfig,
    out: str | Path,
    folds: int = DEFAULT_FOLDS,
    split: str = "train",
    data: AuditData | None = None,
) -> AuditResult:
    """Gather the folds' out-of-fold probabilities, score every pair and write the audit folder.

    Every fold must have predicted its held-out texts with these settings; the error names the folds to run.
    """
    _check_folds(0, folds)
    out = Path(out)
    data = data or load_audit_data(config, split)
    audited = data.audited
    probs = np.full(audited.labels.shape, np.nan, dtype=np.float32)
    text_fold = fold_of(audited.ids, folds)
    todo: list[int] = []
    for k in range(folds):
        rows = np.flatnonzero(text_fold == k)
        fc = fold_config(config, out, k, folds)
        run = RunFolder(fc.output)
        changed = run.changed_settings(fc) if run.config_path.is_file() else ""
        if changed:
            raise ConfigError(_other_settings(k, run.path, changed))
        got = _read_oof(run.path / OOF_FILE, audited.subset(rows), audited.label_names)
        if got is None:
            todo.append(k)
            continue
        probs[rows] = got
    if todo:
        which = ", ".join(map(str, todo))
        raise ConfigError(
            f"fold(s) {which} of {folds} in {out / FOLDS_DIR} have not predicted these texts yet: run "
            f"`goemo audit ... --fold K` for each (same options), or goemo audit without --score-only"
        )
    quality = label_quality(audited.labels, probs, audited.label_names)
    return _write_outputs(config, out, folds, data, quality)


# ---------------------------------------------------------------- folds


def _check_folds(fold: int, folds: int) -> None:
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds {folds}: expected an integer >= 2")
    if not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold}: expected 0 to {folds - 1} (folds count from 0)")


def _fold_splits(data: AuditData) -> dict[str, Split]:
    return {"train": data.audited, "dev": data.select}


def _held_out(data: AuditData, fold: int, folds: int) -> Split:
    rows = np.flatnonzero(fold_of(data.audited.ids, folds) == fold)
    return data.audited.subset(rows, name=f"{data.split}-fold{fold}of{folds}")


def _other_settings(fold: int, path: Path, changed: str) -> str:
    return (
        f"fold {fold} in {path} was trained with other settings ({changed}); give the same settings, "
        f"--overwrite to train the folds again, or another --out"
    )


def _check_fold(run: RunFolder, fc: TrainConfig, model_dir: Path, expected: str) -> None:
    """Refuse to reuse or resume a fold trained with other settings, or on other texts."""
    changed = run.changed_settings(fc)
    if changed:
        raise ConfigError(_other_settings(int(fc.holdout_fold or 0), run.path, changed))
    recorded = ModelFolder.open(model_dir).data_checksums.get("train")
    if recorded != expected:
        raise ConfigError(
            f"fold {fc.holdout_fold} in {run.path} was trained on other texts (the data, --split, "
            f"--max-train-samples, --exclude or --corrections differ); --overwrite trains the folds again, "
            f"or give another --out"
        )


def _predict_fold(config: TrainConfig, run: RunFolder, part: Split) -> None:
    """Fold k's probabilities on the texts it held out, into ``out_of_fold.npz`` (kept while still valid)."""
    path = run.path / OOF_FILE
    folder = ModelFolder.open(run.best_dir)
    if _read_oof(path, part, part.label_names, folder.fingerprint) is not None:
        return
    if len(part):
        preds = predict_split(folder, part, config.scoring_settings(), token_cache_dir=config.cache_dir)
        probs = np.asarray(preds.probs, dtype=np.float32)
    else:
        probs = np.zeros((0, part.num_labels), dtype=np.float32)
    _write_npz(path, part, probs=probs, checksum=np.array(part.checksum()), model=np.array(folder.fingerprint))


def _write_npz(path: Path, split: Split, **arrays: Any) -> None:
    """``arrays`` beside the split's ids and label names, atomically."""
    buffer = io.BytesIO()
    ids = np.array([str(i) for i in split.ids], dtype=str)
    np.savez(buffer, ids=ids, label_names=np.array(split.label_names, dtype=str), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _read_oof(path: Path, part: Split, label_names: Sequence[str], fingerprint: str | None = None) -> np.ndarray | None:
    """The probabilities in ``path`` when they are for exactly ``part`` (and the model ``fingerprint``), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["checksum"]) != part.checksum() or list(saved["label_names"]) != list(label_names):
                return None
            if fingerprint is not None and str(saved["model"]) != fingerprint:
                return None
            probs = np.asarray(saved["probs"], dtype=np.float32)
    except (OSError, ValueError, KeyError):  # a damaged file is predicted again
        return None
    return probs if probs.shape == part.labels.shape else None


# ---------------------------------------------------------------- outputs


def issue_rows(quality: LabelQuality, split: Split) -> list[dict[str, Any]]:
    """The flagged pairs, surest first, as ``label_issues.csv`` rows (plus the text's given labels)."""
    rows = []
    for rank, (i, j) in enumerate(quality.ranking(), start=1):
        rows.append(
            {
                "id": str(split.ids[i]),
                "text": split.texts[i],
                "label": quality.label_names[j],
                "given": int(quality.given[i, j]),
                "score": round(float(quality.score[i, j]), 4),
                "kind": quality.kind(i, j),
                "rank": rank,
                "probability": round(float(quality.probs[i, j]), 6),
                "labels": [quality.label_names[c] for c in np.flatnonzero(quality.given[i])],
            }
        )
    return rows


def _write_outputs(config: TrainConfig, out: Path, folds: int, data: AuditData, quality: LabelQuality) -> AuditResult:
    audited = data.audited
    rows = issue_rows(quality, audited)
    summary = quality.summary()
    flagged = {k: sum(1 for r in rows if r["kind"] == k) for k in ("missing", "spurious")}
    about = {
        "goemo_version": __version__,
        "split": data.split,
        "texts": len(audited),
        "labels": len(audited.label_names),
        "folds": folds,
        "source": data.source.describe(),
        "data_checksum": audited.checksum(),
        "flagged": flagged,
        "score": "normalized margin p(other value) - p(given value); flagged past per-label thresholds "
        "(goemo.audit.quality)",
    }
    files = {
        "issues": out / ISSUES_FILE,
        "page": out / PAGE_FILE,
        "summary_csv": out / SUMMARY_CSV,
        "summary_json": out / SUMMARY_JSON,
        "probabilities": out / OOF_FILE,
        "audit": out / AUDIT_FILE,
    }
    with atomic_open(files["issues"]) as f:
        writer = csv.DictWriter(f, fieldnames=ISSUE_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_open(files["summary_csv"]) as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary)
    atomic_write_json(files["summary_json"], {**about, "per_label": summary})
    atomic_write_text(files["page"], render_review_page(rows, summary, audited.label_names, about))
    _write_npz(files["probabilities"], audited, labels=audited.labels, probs=quality.probs, score=quality.score)
    record = {
        **about,
        "data_source": data.source.to_record(),
        "cleaning": None if data.cleaning is None else data.cleaning.to_record(),
        "training_config": fold_config(config, out, 0, folds).replace(holdout_fold=None, output=str(out)).to_dict(),
        "fold_runs": [str(fold_dir(out, k)) for k in range(folds)],
    }
    atomic_write_json(files["audit"], record)
    return AuditResult(out, quality, len(audited), folds, flagged, files)
