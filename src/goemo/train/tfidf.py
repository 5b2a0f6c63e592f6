"""TF-IDF + one-vs-rest logistic regression: the fast, CPU-only baseline every model must beat.

A neural model's macro-F1 means little without a cheap reference on the same data, the same
thresholds protocol and the same report. This module fits one: TF-IDF of word 1-2-grams and of
character 2-5-grams within words (sublinear tf; the character block catches misspellings,
elongations and word pieces such as "lol"/"loool"), and one L2 logistic regression per label
(liblinear, ``class_weight="balanced"`` so rare labels such as grief are not drowned by their
negatives), with per-label thresholds tuned on dev exactly as `goemo.train.loop` does. It fits
the full training split in about a minute on two CPU cores, five seconds without the
character block (``char_ngrams=False``).

The result is a model folder like a fine-tuned model's, so ``goemo evaluate``, ``goemo
report``, ``goemo predict``, ``goemo serve`` and `goemo.predict.classifier.EmotionClassifier` take it
unchanged (they dispatch on ``goemo.json``'s ``"kind": "tfidf"``). It holds no pickle:

- ``goemo.json``: label names, taxonomy, thresholds (global and dev-tuned per label), the
  vectorizer and classifier settings, data checksums, headline metrics, ``"kind": "tfidf"``;
- ``tfidf.npz``: ``idf_word`` and ``idf_char`` (one value per term), ``coef`` (L, V) and
  ``intercept`` (L,), float64, read with ``np.load(allow_pickle=False)``;
- ``vocabulary.json``: per block, term -> column (``coef``'s columns: the word block, then the
  char block);
- ``config.json``: ``id2label``/``label2id`` as in a transformers folder (for tools that list
  a model's labels); it is *not* loadable by ``transformers.pipeline``.

Loading rebuilds each `sklearn.feature_extraction.text.TfidfVectorizer` from the saved
settings, vocabulary and idf, so the loaded model's probabilities equal the fitted model's.

>>> result = fit_tfidf_baseline(TfidfConfig(data_dir="data/goemotions", output="runs/tfidf"))  # doctest: +SKIP
>>> result.summary["test"]["f1_macro_tuned"]  # doctest: +SKIP
0.45
>>> EmotionClassifier.load("runs/tfidf/best").predict(["thanks a lot!"])  # doctest: +SKIP
[[{'label': 'gratitude', 'score': 0.93}]]
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from goemo.data.split import Split
from goemo.core.errors import ConfigError, ModelError, RunFolderError
from goemo.core.fileio import append_jsonl, atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text
from goemo.predict.classifier import EmotionClassifier, check_texts

log = logging.getLogger(__name__)

KIND = "tfidf"
META_FILE = "goemo.json"
ARRAYS_FILE = "tfidf.npz"
VOCAB_FILE = "vocabulary.json"
CONFIG_FILE = "config.json"
# The intercept of a label with no positive training text: sigmoid(-30) ~ 1e-13, "never".
_ABSENT_LOGIT = -30.0


@dataclass
class TfidfConfig:
    """Settings of `fit_tfidf_baseline`; saved as the run's ``config.yaml``.

    Defaults were chosen on the dev split only (docs/benchmarks.md, "TF-IDF baseline"):
    word 1-2-grams and char_wb 2-5-grams seen in at least 2 training texts, sublinear tf,
    C = 2 and balanced class weights.

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
    max_train_samples: int | None = None
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
        """Per feature block (``word``, and ``char`` when on), the `TfidfVectorizer` keyword arguments.

        JSON-safe: ``goemo.json`` stores them and `TfidfModel.load` rebuilds from them. Each
        block is L2-normalised on its own and the blocks are concatenated, in this order.
        """
        common = {"lowercase": True, "strip_accents": "unicode", "min_df": self.min_df, "max_df": self.max_df,
                  "max_features": self.max_features, "sublinear_tf": self.sublinear_tf, "norm": "l2",
                  "use_idf": True, "smooth_idf": True}
        blocks = {"word": {"analyzer": "word", "ngram_range": [1, self.ngram_max],
                           "token_pattern": r"(?u)\b\w\w+\b", **common}}
        if self.char_ngrams:
            blocks["char"] = {"analyzer": "char_wb", "ngram_range": list(self.char_ngram_range), **common}
        return blocks

    def classifier_settings(self) -> dict[str, Any]:
        """The `LogisticRegression` settings, one model per label."""
        return {"kind": "logistic_regression", "C": self.c, "class_weight": self.class_weight,
                "solver": "liblinear", "max_iter": self.max_iter, "random_state": self.seed}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ----------------------------------------------------------------------------- the model


def _vectorizer(settings: dict[str, Any], vocabulary: dict[str, int] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    kwargs = dict(settings)
    kwargs["ngram_range"] = tuple(kwargs["ngram_range"])
    if vocabulary is not None:  # a fixed vocabulary: min_df/max_df/max_features were applied at fit time
        kwargs.update(vocabulary=vocabulary, min_df=1, max_df=1.0, max_features=None)
    return TfidfVectorizer(dtype=np.float64, **kwargs)


class TfidfModel:
    """Fitted TF-IDF blocks (word, char) and one linear scorer per label: ``logit = X @ coef.T + intercept``.

    ``X`` is the blocks' TF-IDF matrices side by side, in the order of ``vectorizers``.

    >>> model = TfidfModel.fit(splits["train"], TfidfConfig())   # doctest: +SKIP
    >>> model.predict_proba(["thank you!"]).shape                 # doctest: +SKIP
    (1, 28)
    """

    def __init__(self, vectorizers: dict[str, Any], coef: np.ndarray, intercept: np.ndarray,
                 label_names: Sequence[str], settings: dict[str, dict[str, Any]]) -> None:
        self.vectorizers = dict(vectorizers)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.label_names = list(label_names)
        self.settings = {k: dict(v) for k, v in settings.items()}
        terms = sum(len(v.vocabulary_) for v in self.vectorizers.values())
        if self.coef.shape != (len(self.label_names), terms):
            raise ModelError(f"coef has shape {self.coef.shape}; expected ({len(self.label_names)} labels, {terms} terms)")
        if self.intercept.shape != (len(self.label_names),):
            raise ModelError(f"intercept has shape {self.intercept.shape}; expected ({len(self.label_names)},)")

    @property
    def vocabulary_size(self) -> int:
        """Columns of ``X``: the terms of all blocks."""
        return int(self.coef.shape[1])

    @classmethod
    def fit(cls, train: Split, config: TfidfConfig) -> "TfidfModel":
        """Fit the vectorizers on ``train.texts`` and one logistic regression per label.

        A label without positive (or without negative) training texts cannot be fitted; it
        gets a constant score (never / always) and a warning, instead of failing the run.
        """
        import scipy.sparse as sp
        from joblib import Parallel, delayed

        settings = config.vectorizer_settings()
        vectorizers = {name: _vectorizer(kwargs) for name, kwargs in settings.items()}
        blocks = [v.fit_transform(train.texts) for v in vectorizers.values()]
        X = sp.hstack(blocks, format="csr")
        if X.shape[1] == 0:
            raise ConfigError("the training texts yield an empty vocabulary; lower min_df or give more texts")
        params = {k: v for k, v in config.classifier_settings().items() if k != "kind"}
        fits = Parallel(n_jobs=config.n_jobs)(
            delayed(_fit_label)(X, train.labels[:, j], params, name) for j, name in enumerate(train.label_names)
        )
        coef = np.stack([c for c, _ in fits])
        intercept = np.array([b for _, b in fits])
        return cls(vectorizers, coef, intercept, train.label_names, settings)

    def terms(self) -> dict[str, int]:
        """Terms per block, e.g. ``{"word": 58340, "char": 86098}``."""
        return {name: len(v.vocabulary_) for name, v in self.vectorizers.items()}

    def features(self, texts: Sequence[str]) -> Any:
        """The sparse ``(n, V)`` TF-IDF matrix the scorers read."""
        import scipy.sparse as sp

        texts = check_texts(texts)
        return sp.hstack([v.transform(texts) for v in self.vectorizers.values()], format="csr")

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Logits ``(n, L)`` float64."""
        return np.asarray(self.features(texts) @ self.coef.T) + self.intercept

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities ``(n, L)`` float64 (each label's logistic regression, as sklearn's ``predict_proba``)."""
        from scipy.special import expit

        return expit(self.decision_function(texts))

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path, meta: dict[str, Any]) -> Path:
        """Write ``tfidf.npz``, ``vocabulary.json``, ``config.json`` and ``goemo.json`` (``meta``) into ``folder``.

        ``tfidf.npz`` holds ``idf_<block>`` per block, ``coef`` and ``intercept``;
        ``vocabulary.json`` maps each block to its ``{term: column}`` (columns counted
        within the block; ``coef``'s columns are the blocks one after another).
        """
        folder = Path(folder)
        arrays = {f"idf_{name}": np.asarray(v.idf_, dtype=np.float64) for name, v in self.vectorizers.items()}
        buf = io.BytesIO()
        np.savez(buf, coef=self.coef, intercept=self.intercept, **arrays)
        atomic_write_bytes(folder / ARRAYS_FILE, buf.getvalue())
        vocabulary = {
            name: {t: int(c) for t, c in sorted(v.vocabulary_.items(), key=lambda kv: kv[1])}
            for name, v in self.vectorizers.items()
        }
        atomic_write_json(folder / VOCAB_FILE, vocabulary, indent=None)
        atomic_write_json(folder / CONFIG_FILE, {
            "goemo_kind": KIND,
            "problem_type": "multi_label_classification",
            "num_labels": len(self.label_names),
            "id2label": {str(i): n for i, n in enumerate(self.label_names)},
            "label2id": {n: i for i, n in enumerate(self.label_names)},
        })
        atomic_write_json(folder / META_FILE, {**meta, "kind": KIND, "label_names": self.label_names,
                                               "vectorizers": self.settings})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TfidfModel":
        """Rebuild the model from a folder written by `save` (plain arrays and JSON; nothing is unpickled)."""
        folder = Path(folder)
        meta = read_meta(folder)
        if meta.get("kind") != KIND:
            raise ModelError(f"{folder / META_FILE}: not a TF-IDF model (kind {meta.get('kind')!r}, expected {KIND!r})")
        settings = meta.get("vectorizers")
        if not isinstance(settings, dict) or not settings:
            raise ModelError(f"{folder / META_FILE}: no 'vectorizers' settings")
        try:
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            coef, intercept = arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{folder / ARRAYS_FILE}: cannot read the model arrays (coef, intercept, idf_*): {e}") from None
        try:
            vocabularies = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{folder / VOCAB_FILE}: cannot read the vocabulary: {e}") from None
        vectorizers = {}
        for name, kwargs in settings.items():
            vocab, idf = (vocabularies or {}).get(name), arrays.get(f"idf_{name}")
            if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
                raise ModelError(f"{folder / VOCAB_FILE}: expected {name!r}: an object mapping each term to a column 0..V-1")
            if idf is None or idf.shape != (len(vocab),):
                raise ModelError(f"{folder / ARRAYS_FILE}: idf_{name} missing or not one value per {name} term "
                                 f"({len(vocab)})")
            try:
                vectorizers[name] = _vectorizer(kwargs, vocab)
                vectorizers[name].idf_ = idf
            except (TypeError, ValueError) as e:
                raise ModelError(f"{folder / META_FILE}: vectorizer {name!r} settings {kwargs}: {e}") from None
        return cls(vectorizers, coef, intercept, meta.get("label_names") or [], settings)


def _fit_label(X: Any, y: np.ndarray, params: dict[str, Any], name: str) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    positives = int(y.sum())
    if positives in (0, len(y)):
        log.warning("label %r has %s training texts: it gets a constant score", name,
                    "no positive" if positives == 0 else "only positive")
        return np.zeros(X.shape[1]), (_ABSENT_LOGIT if positives == 0 else -_ABSENT_LOGIT)
    clf = LogisticRegression(**params).fit(X, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


# ----------------------------------------------------------------------------- folder dispatch


def read_meta(folder: str | Path) -> dict[str, Any]:
    """``goemo.json`` of ``folder`` ({} when absent)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def is_tfidf_folder(folder: str | Path) -> bool:
    """True when ``folder/goemo.json`` says ``"kind": "tfidf"`` (cheap: no sklearn import).

    >>> is_tfidf_folder("runs/tfidf/best")  # doctest: +SKIP
    True
    """
    return read_meta(folder).get("kind") == KIND


def weight_files(folder: str | Path) -> list[Path]:
    """The files that determine a TF-IDF model's scores (for `goemo.evaluate.evaluation.model_fingerprint`); [] otherwise."""
    folder = Path(folder)
    if not is_tfidf_folder(folder):
        return []
    return [p for p in (folder / ARRAYS_FILE, folder / VOCAB_FILE) if p.is_file()]


def predict_split_proba(model_dir: str | Path, split: Split) -> tuple[np.ndarray, tuple[str, ...]]:
    """Float64 probabilities of a TF-IDF model folder on ``split``: `goemo.evaluate.evaluation`'s model run."""
    from goemo.evaluate.evaluation import EvaluationError

    model = TfidfModel.load(model_dir)
    if list(model.label_names) != list(split.label_names):
        raise EvaluationError(
            f"{model_dir} predicts labels {model.label_names[:3]}…, the split has {split.label_names[:3]}…; "
            f"evaluate with the model's taxonomy"
        )
    log.info("running %s on %s (%d texts, TF-IDF on CPU)", model_dir, split.name, len(split))
    return model.predict_proba(split.texts), tuple(model.label_names)


class _NoTokenizer:
    """EmotionClassifier reads ``pad_token_id`` from its tokenizer; TF-IDF tokenises inside the vectorizer."""

    pad_token_id = 0
    model_max_length = 0


class TfidfEmotionClassifier(EmotionClassifier):
    """`EmotionClassifier` backed by a `TfidfModel`: same ``predict``/``predict_proba``/``decide`` API.

    >>> clf = EmotionClassifier.load("runs/tfidf/best")   # doctest: +SKIP
    >>> clf.backend
    'tfidf'
    """

    def __init__(self, model: TfidfModel, thresholds: np.ndarray, *, batch_size: int = 64,
                 meta: dict[str, Any] | None = None, path: Path | None = None) -> None:
        super().__init__(self._no_runner, _NoTokenizer(), model.label_names, thresholds, max_length=0,
                         batch_size=batch_size, meta=meta, path=path, backend=KIND, device="cpu", precision="fp64")
        self.model = model

    @staticmethod
    def _no_runner(input_ids: Any, attention_mask: Any) -> np.ndarray:  # pragma: no cover - never called
        raise ModelError("a TF-IDF model does not run on token ids")

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits ``(n, L)`` float32 (the base class's contract), in input order."""
        return self.model.decision_function(texts).astype(np.float32)


def load_classifier(folder: str | Path, *, backend: str = "auto", device: str = "auto",
                    batch_size: int = 64) -> TfidfEmotionClassifier:
    """`EmotionClassifier.load` for a TF-IDF folder: CPU, backend ``"tfidf"``."""
    from goemo.predict.classifier import thresholds_from_meta

    folder = Path(folder)
    if backend not in ("auto", KIND):
        raise ConfigError(f"{folder} is a TF-IDF model (goemo.json kind 'tfidf'): backend {backend!r} does not "
                          f"apply; use --backend auto")
    if device not in ("auto", "cpu"):
        log.warning("%s is a TF-IDF model: it runs on the CPU, not %s", folder, device)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: expected an integer >= 1")
    model = TfidfModel.load(folder)
    meta = read_meta(folder)
    return TfidfEmotionClassifier(model, thresholds_from_meta(meta, model.label_names), batch_size=batch_size,
                                  meta=meta, path=folder)


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
    from goemo.scoring.metrics import summary

    probs = 1.0 / (1.0 + np.exp(-logits))
    loss = float(np.mean(np.logaddexp(0.0, logits) - y * logits))  # BCE with logits, mean over entries
    return {"val_loss": loss, **{k: float("nan") if v is None else v for k, v in summary(y, probs, threshold).items()}}


def _prepare_run_dir(path: Path, overwrite: bool) -> None:
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RunFolderError(f"output folder {path} already holds a run; pass --overwrite to replace it, "
                                 f"or choose another --out")
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)


def fit_tfidf_baseline(config: TfidfConfig, splits: dict[str, Split] | None = None) -> BaselineResult:
    """Fit on train, tune per-label thresholds on dev, score dev and test, write the run folder.

    ``splits`` (``{"train", "dev", "test"?}``) replaces reading ``config.data_dir``. Nothing
    is chosen on test: thresholds come from dev (`goemo.scoring.metrics.tune_thresholds`, which
    refuses a test split) and test is only scored. Writes ``config.yaml``, ``metrics.jsonl``
    (one epoch record, so ``goemo report`` draws its training table), ``summary.json`` and
    ``best/`` (the model folder) under ``config.output``.

    >>> result = fit_tfidf_baseline(TfidfConfig(output="/tmp/tfidf"), splits)  # doctest: +SKIP
    >>> result.summary["dev"]["f1_macro"], result.summary["fit_time_s"]          # doctest: +SKIP
    """
    import yaml

    from goemo.scoring.metrics import summary as metric_summary
    from goemo.scoring.metrics import tune_thresholds
    from goemo.train.resources import hardware, peak_rss_mb

    started = time.perf_counter()
    if splits is None:
        from goemo.data.io import load_goemotions

        splits = load_goemotions(config.data_dir, taxonomy=config.taxonomy)
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
    _prepare_run_dir(run_dir, config.overwrite)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

    t0 = time.perf_counter()
    model = TfidfModel.fit(splits["train"], config)
    fit_time = time.perf_counter() - t0
    log.info("fitted TF-IDF (%d terms) + %d logistic regressions in %.1fs", model.vocabulary_size, len(names), fit_time)

    t0 = time.perf_counter()
    logits = {k: model.decision_function(s.texts) for k, s in splits.items() if k in ("train", "dev", "test")}
    dev_probs = 1.0 / (1.0 + np.exp(-logits["dev"]))
    tuned = tune_thresholds(splits["dev"].labels, dev_probs, split_name="dev", label_names=names)
    final: dict[str, dict[str, float]] = {}
    for key in ("dev", "test"):
        if key in logits:
            final[key] = _scores(splits[key].labels, logits[key], config.threshold)
            probs = 1.0 / (1.0 + np.exp(-logits[key]))
            final[key]["f1_macro_tuned"] = metric_summary(splits[key].labels, probs, tuned)["f1_macro"]
    eval_time = time.perf_counter() - t0
    n_train = len(splits["train"])
    epoch = {
        "event": "epoch", "epoch": 1,
        "train_loss": _scores(splits["train"].labels, logits["train"], config.threshold)["val_loss"],
        **{k: v for k, v in final["dev"].items() if k != "f1_macro_tuned"},
        "lr": None, "epoch_time_s": round(fit_time, 3), "examples_per_s": round(n_train / max(fit_time, 1e-9), 1),
    }
    append_jsonl(run_dir / "metrics.jsonl", epoch)

    import sklearn
    from joblib import effective_n_jobs

    meta = {
        "goemo_version": __import__("goemo").__version__,
        "taxonomy": config.taxonomy,
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
        "epochs": [{k: epoch[k] for k in ("epoch", "train_loss", "val_loss", "f1_macro", "auc_macro",
                                          "epoch_time_s", "examples_per_s")}],
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
