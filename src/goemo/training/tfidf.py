"""TF-IDF + one-vs-rest logistic regression: the fast, CPU-only baseline every model must beat.

A neural model's macro-F1 means little without a cheap reference on the same data, thresholds
protocol and report. Word 1-2-grams and in-word character 2-5-grams (misspellings, "loool"),
sublinear tf, one L2 logistic regression per label (balanced class weights, so rare labels are
not drowned by their negatives), thresholds tuned on dev as `goemo.training.loop` does.

The result is a model folder like a fine-tuned model's (``"kind": "tfidf"`` in ``goemo.json``),
so every verb and `goemo.predict.classifier.EmotionClassifier` take it. It holds no pickle:
``tfidf.npz`` (idf per block, ``coef``, ``intercept``), ``vocabulary.json`` (term -> column per
block) and a ``config.json`` with the label maps only (not loadable by transformers); loading
rebuilds each `TfidfVectorizer` from its settings, so probabilities equal the fitted model's.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import yaml
from joblib import effective_n_jobs

from goemo.core.config import SAMPLE_SIZE_VARIABLES, sample_size_from_env
from goemo.core.errors import ConfigError, RunFolderError
from goemo.core.fileio import append_jsonl, atomic_directory, atomic_write_json, atomic_write_text
from goemo.core.run_folder import LOCK_FILE, RunFolder
from goemo.core.thresholds import sigmoid
from goemo.data.source import DataSource
from goemo.data.split import Split
from goemo.models.tfidf import KIND, TfidfModel
from goemo.scoring.metrics import summary as metric_summary
from goemo.scoring.metrics import tune_thresholds
from goemo.training.resources import hardware, peak_rss_mb

log = logging.getLogger(__name__)


@dataclass
class TfidfConfig:
    """Settings of `fit_tfidf_baseline`, saved as ``config.yaml``; defaults chosen on dev only (docs/benchmarks.md).

    >>> TfidfConfig(char_ngrams=False).vectorizer_settings()["word"]["ngram_range"]
    [1, 2]
    """

    data_dir: str = "data/goemotions"
    taxonomy: str = "goemotions"
    output: str = "runs/tfidf"
    ngram_max: int = 2
    char_ngrams: bool = True
    char_ngram_range: tuple[int, int] = (2, 5)
    min_df: int = 2
    max_df: float = 1.0
    max_features: int | None = None
    sublinear_tf: bool = True
    c: float = 2.0
    class_weight: str | None = "balanced"
    max_iter: int = 1000
    threshold: float = 0.3
    seed: int = 0
    # default $GOEMO_MAX_TRAIN_SAMPLES, as for goemo train (goemo.core.config)
    max_train_samples: int | None = field(
        default_factory=functools.partial(sample_size_from_env, SAMPLE_SIZE_VARIABLES["max_train_samples"])
    )
    n_jobs: int = 1
    overwrite: bool = False
    model: str = field(default="", init=False)  # a name for reports: tfidf-word+char-logreg or tfidf-word-logreg

    def __post_init__(self) -> None:
        self.model = f"tfidf-{'word+char' if self.char_ngrams else 'word'}-logreg"
        if self.ngram_max < 1:
            raise ConfigError(f"ngram_max={self.ngram_max}: expected an integer >= 1")
        self.char_ngram_range = (int(self.char_ngram_range[0]), int(self.char_ngram_range[1]))
        if not 1 <= self.char_ngram_range[0] <= self.char_ngram_range[1]:
            raise ConfigError(f"char_ngram_range={self.char_ngram_range}: expected (low, high) with 1 <= low <= high")
        if self.min_df < 1:
            raise ConfigError(f"min_df={self.min_df}: expected an integer >= 1 (texts a term must occur in)")
        if not 0.0 < self.max_df <= 1.0:
            raise ConfigError(f"max_df={self.max_df}: expected a fraction in (0, 1]")
        if self.max_features is not None and self.max_features < 1:
            raise ConfigError(f"max_features={self.max_features}: expected an integer >= 1, or none")
        if self.c <= 0:
            raise ConfigError(f"c={self.c}: the inverse regularisation strength must be > 0")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"class_weight={self.class_weight!r}: expected 'balanced' or none")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold={self.threshold}: expected a number in [0, 1]")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(f"max_train_samples={self.max_train_samples}: expected an integer >= 1")

    def vectorizer_settings(self) -> dict[str, dict[str, Any]]:
        """Per feature block (``word``, ``char``), `TfidfVectorizer`'s arguments: JSON-safe, stored in ``goemo.json``."""
        common = {
            "lowercase": True,
            "strip_accents": "unicode",
            "min_df": self.min_df,
            "max_df": self.max_df,
            "max_features": self.max_features,
            "sublinear_tf": self.sublinear_tf,
            "norm": "l2",
            "use_idf": True,
            "smooth_idf": True,
        }
        blocks = {
            "word": {
                "analyzer": "word",
                "ngram_range": [1, self.ngram_max],
                "token_pattern": r"(?u)\b\w\w+\b",
                **common,
            }
        }
        if self.char_ngrams:
            blocks["char"] = {"analyzer": "char_wb", "ngram_range": list(self.char_ngram_range), **common}
        return blocks

    def classifier_settings(self) -> dict[str, Any]:
        """The `LogisticRegression` settings, one model per label."""
        return {
            "kind": "logistic_regression",
            "C": self.c,
            "class_weight": self.class_weight,
            "solver": "liblinear",
            "max_iter": self.max_iter,
            "random_state": self.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ----------------------------------------------------------------------------- the run


@dataclass
class BaselineResult:
    """Where the run went and its headline numbers (``summary.json``)."""

    run_dir: Path
    best_dir: Path
    summary: dict[str, Any]
    model: TfidfModel


def _scores(y: np.ndarray, logits: np.ndarray, threshold: Any) -> dict[str, float]:
    """The per-epoch record's numbers: BCE on the logits and `goemo.scoring.metrics.summary`."""
    probs = sigmoid(logits)
    loss = float(np.mean(np.logaddexp(0.0, logits) - y * logits))  # BCE with logits, mean over entries
    values = metric_summary(y, probs, threshold)
    return {"val_loss": loss, **{k: float("nan") if v is None else v for k, v in values.items()}}


def _prepare_run_dir(path: Path, overwrite: bool) -> None:
    """An empty run folder (but for the lock this job holds), or `RunFolderError` without ``overwrite``."""
    existing = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []
    if existing:
        if not overwrite:
            raise RunFolderError(
                f"output folder {path} already holds a run; pass --overwrite to replace it, or choose another --out"
            )
        for child in existing:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)


def fit_tfidf_baseline(config: TfidfConfig, splits: dict[str, Split] | None = None) -> BaselineResult:
    """Fit on train, tune per-label thresholds on dev, score dev and test, write the run folder.

    ``splits`` replaces reading ``config.data_dir``. Nothing is chosen on test. ``metrics.jsonl``
    gets one epoch record, so ``goemo report`` draws its training table.
    """
    started = time.perf_counter()
    if splits is None:
        splits = DataSource.folder(config.data_dir, config.taxonomy).splits()
    splits = dict(splits)
    if "train" not in splits or "dev" not in splits:
        raise ConfigError("the TF-IDF baseline needs a 'train' and a 'dev' split")
    if config.max_train_samples:
        splits["train"] = splits["train"].sample(config.max_train_samples, seed=config.seed)
    names = list(splits["train"].label_names)
    for key, split in splits.items():
        if list(split.label_names) != names:
            raise ConfigError(f"split {key!r} has labels {split.label_names[:3]}…, not those of train")
    run_dir = Path(config.output)  # touched only once the data is known to be good
    with RunFolder(run_dir).lock():  # one job per folder, as for a transformer's run
        _prepare_run_dir(run_dir, config.overwrite)
        return _fit_and_write(config, splits, names, run_dir, started)


def _fit_and_write(
    config: TfidfConfig, splits: dict[str, Split], names: list[str], run_dir: Path, started: float
) -> BaselineResult:
    """`fit_tfidf_baseline` once the run folder is locked and empty."""
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

    t0 = time.perf_counter()
    model = TfidfModel.fit(splits["train"], config)
    fit_time = time.perf_counter() - t0
    log.info("fitted TF-IDF (%d terms) + %d logistic regressions in %.1fs", model.vocabulary_size, len(names), fit_time)

    t0 = time.perf_counter()
    logits = {k: model.decision_function(s.texts) for k, s in splits.items() if k in ("train", "dev", "test")}
    dev_probs = sigmoid(logits["dev"])
    tuned = tune_thresholds(splits["dev"].labels, dev_probs, split_name="dev", label_names=names)
    final: dict[str, dict[str, float | None]] = {}
    for key in ("dev", "test"):
        if key in logits:
            probs = sigmoid(logits[key])
            tuned_f1 = metric_summary(splits[key].labels, probs, tuned)["f1_macro"]
            final[key] = {**_scores(splits[key].labels, logits[key], config.threshold), "f1_macro_tuned": tuned_f1}
    eval_time = time.perf_counter() - t0
    n_train = len(splits["train"])
    epoch = {
        "event": "epoch",
        "epoch": 1,
        "train_loss": _scores(splits["train"].labels, logits["train"], config.threshold)["val_loss"],
        **{k: v for k, v in final["dev"].items() if k != "f1_macro_tuned"},
        "lr": None,
        "epoch_time_s": round(fit_time, 3),
        "examples_per_s": round(n_train / max(fit_time, 1e-9), 1),
    }
    append_jsonl(run_dir / "metrics.jsonl", epoch)

    meta = {
        "goemo_version": __import__("goemo").__version__,
        "taxonomy": DataSource.folder(config.data_dir, config.taxonomy).model_taxonomy(splits["train"].label_names),
        "pooling": "bag-of-words",
        "thresholds": {
            "global": config.threshold,
            "per_label": tuned.by_label(),
            "tuned_on": tuned.split,
            "tuning": tuned.to_dict(),
        },
        "classifier": config.classifier_settings(),
        "vocabulary_size": model.vocabulary_size,
        "terms": model.terms(),
        "training_config": config.to_dict(),
        "data_source": DataSource.folder(config.data_dir, config.taxonomy).to_record(),
        "data_checksums": {k: s.checksum() for k, s in splits.items()},
        "metrics": final,
        "sklearn_version": sklearn.__version__,
    }
    with atomic_directory(run_dir / "best") as tmp:
        model.save(tmp, meta)
    summary = {
        "run_dir": str(run_dir),
        "model": config.model,
        "kind": KIND,
        "threshold": config.threshold,
        **final,
        "vocabulary_size": model.vocabulary_size,
        "terms": model.terms(),
        "train_texts": n_train,
        "fit_time_s": round(fit_time, 2),
        "epochs": [
            {
                k: epoch[k]
                for k in ("epoch", "train_loss", "val_loss", "f1_macro", "auc_macro", "epoch_time_s", "examples_per_s")
            }
        ],
        "resources": {
            "wall_time_s": round(time.perf_counter() - started, 2),
            "epoch_time_s": [round(fit_time, 2)],
            "eval_time_s": round(eval_time, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "precision": "fp64",
            "num_processes": effective_n_jobs(config.n_jobs),
            "hardware": {**hardware(), "sklearn": sklearn.__version__},
        },
    }
    atomic_write_json(run_dir / "summary.json", summary)
    return BaselineResult(run_dir, run_dir / "best", summary, model)
