"""The TF-IDF + logistic-regression model: fitted blocks, linear scorers, and its folder files.

`goemo.training.tfidf` fits it (the baseline every neural model must beat); the predictor's
TF-IDF backend (`goemo.predict.tfidf_backend`) loads it. The folder holds no pickle:
``tfidf.npz`` (idf per block, ``coef`` (L, V), ``intercept`` (L,), float64, read with
``np.load(allow_pickle=False)``), ``vocabulary.json`` (per block, term -> column),
``config.json`` (labels, as in a transformers folder) and ``goemo.json`` (``"kind": "tfidf"``,
the vectorizer settings). Loading rebuilds each `TfidfVectorizer` from the saved settings,
vocabulary and idf, so the loaded model's probabilities equal the fitted model's.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from goemo.core.errors import ConfigError, ModelError
from goemo.core.fileio import atomic_write_bytes, atomic_write_json
from goemo.core.folder import CONFIG_FILE, META_FILE, TFIDF_FILES, TFIDF_KIND, ModelFolder, write_meta
from goemo.core.thresholds import sigmoid
from goemo.data.records import check_texts
from goemo.data.split import Split

log = logging.getLogger(__name__)

KIND = TFIDF_KIND
ARRAYS_FILE, VOCAB_FILE = TFIDF_FILES
# The intercept of a label with no positive training text: sigmoid(-30) ~ 1e-13, "never".
_ABSENT_LOGIT = -30.0


class FitSettings(Protocol):
    """What fitting needs from a config (`goemo.training.tfidf.TfidfConfig` provides it)."""

    n_jobs: int

    def vectorizer_settings(self) -> dict[str, dict[str, Any]]: ...

    def classifier_settings(self) -> dict[str, Any]: ...


def _vectorizer(settings: dict[str, Any], vocabulary: dict[str, int] | None = None) -> Any:
    kwargs = dict(settings)
    kwargs["ngram_range"] = tuple(kwargs["ngram_range"])
    if vocabulary is not None:  # a fixed vocabulary: min_df/max_df/max_features were applied at fit time
        kwargs.update(vocabulary=vocabulary, min_df=1, max_df=1.0, max_features=None)
    return TfidfVectorizer(dtype=np.float64, **kwargs)


class TfidfModel:
    """Fitted TF-IDF blocks (word, char) and one linear scorer per label: ``logit = X @ coef.T + intercept``.

    ``X`` is the blocks' TF-IDF matrices side by side, in the order of ``vectorizers``.

        model = TfidfModel.fit(splits["train"], TfidfConfig())
        model.predict_proba(["thank you!"]).shape
        # -> (1, 28)
    """

    def __init__(
        self,
        vectorizers: dict[str, Any],
        coef: np.ndarray,
        intercept: np.ndarray,
        label_names: Sequence[str],
        settings: dict[str, dict[str, Any]],
    ) -> None:
        self.vectorizers = dict(vectorizers)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.label_names = list(label_names)
        self.settings = {k: dict(v) for k, v in settings.items()}
        terms = sum(len(v.vocabulary_) for v in self.vectorizers.values())
        if self.coef.shape != (len(self.label_names), terms):
            raise ModelError(
                f"coef has shape {self.coef.shape}; expected ({len(self.label_names)} labels, {terms} terms)"
            )
        if self.intercept.shape != (len(self.label_names),):
            raise ModelError(f"intercept has shape {self.intercept.shape}; expected ({len(self.label_names)},)")

    @property
    def vocabulary_size(self) -> int:
        """Columns of ``X``: the terms of all blocks."""
        return int(self.coef.shape[1])

    @classmethod
    def fit(cls, train: Split, config: FitSettings) -> TfidfModel:
        """Fit the vectorizers on ``train.texts`` and one logistic regression per label.

        A label without positive (or without negative) training texts cannot be fitted; it
        gets a constant score (never / always) and a warning, instead of failing the run.
        """
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
        texts = check_texts(texts)
        return sp.hstack([v.transform(texts) for v in self.vectorizers.values()], format="csr")

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Logits ``(n, L)`` float64."""
        return np.asarray(self.features(texts) @ self.coef.T) + self.intercept

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities ``(n, L)`` float64 (each label's logistic regression, as sklearn's ``predict_proba``)."""
        return sigmoid(self.decision_function(texts))

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
        # allow_pickle: numpy's default, given by name so that mypy does not match ``**arrays`` to it
        np.savez(buf, allow_pickle=True, coef=self.coef, intercept=self.intercept, **arrays)
        atomic_write_bytes(folder / ARRAYS_FILE, buf.getvalue())
        vocabulary = {
            name: {t: int(c) for t, c in sorted(v.vocabulary_.items(), key=lambda kv: kv[1])}
            for name, v in self.vectorizers.items()
        }
        atomic_write_json(folder / VOCAB_FILE, vocabulary, indent=None)
        atomic_write_json(
            folder / CONFIG_FILE,
            {
                "goemo_kind": KIND,
                "problem_type": "multi_label_classification",
                "num_labels": len(self.label_names),
                "id2label": {str(i): n for i, n in enumerate(self.label_names)},
                "label2id": {n: i for i, n in enumerate(self.label_names)},
            },
        )
        write_meta(folder, {**meta, "kind": KIND, "label_names": self.label_names, "vectorizers": self.settings})
        return folder

    @classmethod
    def load(cls, folder: str | Path | ModelFolder) -> TfidfModel:
        """Rebuild the model from a folder written by `save` (plain arrays and JSON; nothing is unpickled)."""
        opened = folder if isinstance(folder, ModelFolder) else ModelFolder.open(folder)
        folder, meta = opened.path, opened.meta
        if meta.get("kind") != KIND:
            raise ModelError(
                f"{opened.path / META_FILE}: not a TF-IDF model (kind {meta.get('kind')!r}, expected {KIND!r})"
            )
        settings = meta.get("vectorizers")
        if not isinstance(settings, dict) or not settings:
            raise ModelError(f"{opened.path / META_FILE}: no 'vectorizers' settings")
        try:
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            coef, intercept = arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(
                f"{folder / ARRAYS_FILE}: cannot read the model arrays (coef, intercept, idf_*): {e}"
            ) from None
        try:
            vocabularies = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{folder / VOCAB_FILE}: cannot read the vocabulary: {e}") from None
        vectorizers = {}
        for name, kwargs in settings.items():
            vocab, idf = (vocabularies or {}).get(name), arrays.get(f"idf_{name}")
            if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
                raise ModelError(
                    f"{folder / VOCAB_FILE}: expected {name!r}: an object mapping each term to a column 0..V-1"
                )
            if idf is None or idf.shape != (len(vocab),):
                raise ModelError(
                    f"{folder / ARRAYS_FILE}: idf_{name} missing or not one value per {name} term ({len(vocab)})"
                )
            try:
                vectorizers[name] = _vectorizer(kwargs, vocab)
                vectorizers[name].idf_ = idf
            except (TypeError, ValueError) as e:
                raise ModelError(f"{folder / META_FILE}: vectorizer {name!r} settings {kwargs}: {e}") from None
        return cls(vectorizers, coef, intercept, meta.get("label_names") or [], settings)


def _fit_label(X: Any, y: np.ndarray, params: dict[str, Any], name: str) -> tuple[np.ndarray, float]:
    positives = int(y.sum())
    if positives in (0, len(y)):
        log.warning(
            "label %r has %s training texts: it gets a constant score",
            name,
            "no positive" if positives == 0 else "only positive",
        )
        return np.zeros(X.shape[1]), (_ABSENT_LOGIT if positives == 0 else -_ABSENT_LOGIT)
    clf = LogisticRegression(**params).fit(X, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
