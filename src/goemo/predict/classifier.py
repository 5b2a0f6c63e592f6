"""The one predictor: `EmotionClassifier` turns texts into probabilities and decisions.

Every command that runs a model goes through it (training's per-epoch scoring, ``evaluate``,
``report``, ``ensemble`` through `goemo.predict.cache`, ``predict``, ``serve``), so one text
gets one answer everywhere. Backends: ``torch`` (`goemo.predict.torch_backend`), ``onnx``
(`goemo.predict.onnx_backend`, no torch) and ``tfidf`` (`goemo.predict.tfidf_backend`).
``backend="auto"`` follows the folder's kind, so the numbers a model is scored with never change
with the machine; ``backend="fastest"`` (``goemo predict`` and ``serve``) picks the fastest the
folder and hardware allow (`goemo.predict.fastest`).

Precision, batch size, max length and the long-text mode are explicit settings (`settings`),
part of the prediction-cache key. Texts are tokenised once, sorted by length and batched
(`goemo.predict.runner.logits_in_order`). A text over ``max_length`` tokens is scored piece by
piece, each label's logit the max over the pieces (`goemo.predict.pieces`), or truncated
(``long_text="truncate"``). Decisions use the folder's thresholds and the strict
``probability > threshold`` (`goemo.core.thresholds.binarize`). The calibration parts not folded
into the weights are applied after the sigmoid (`EmotionClassifier.probabilities`).

    clf = EmotionClassifier.load("runs/goemo/best")
    clf.predict(["I love it, thank you!"])
    # -> [[{'label': 'gratitude', 'score': 0.97}, {'label': 'love', 'score': 0.81}]]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.calibration import Calibration
from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import ONNX_FILE, ModelFolder
from goemo.core.run_settings import BACKENDS, RunSettings
from goemo.core.thresholds import binarize, sigmoid
from goemo.data.batching import EncodedSplit, encode_split
from goemo.data.records import check_texts
from goemo.data.split import Split
from goemo.data.taxonomy import Taxonomy, load_taxonomy, project_labels, project_probs
from goemo.predict.explain import Explanation, explain_texts
from goemo.predict.fastest import BackendChoice, choose_fastest
from goemo.predict.pieces import AGGREGATE, DEFAULT_RULE, MODES, PieceRule, Pieces, encode_pieces
from goemo.predict.runner import (
    Gather,
    check_max_length,
    choose_max_length,
    encode_texts,
    logits_in_order,
    pad_id_of,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 128


def choose_backend(folder: ModelFolder, backend: str) -> str:
    """The backend ``backend`` asks for, checked against what the folder holds: ``auto`` the folder's
    kind; ``fastest`` the same for a TF-IDF model or ONNX export, else ``"fastest"`` (`choose_fastest`)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: expected {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
    kind = folder.kind
    if kind == "tfidf":
        if backend not in ("auto", "fastest", "tfidf"):
            raise ConfigError(
                f"{folder.path} is a TF-IDF model (goemo.json kind 'tfidf'): backend {backend!r} does "
                f"not apply; use --backend auto"
            )
        return "tfidf"
    if backend == "onnx" and not folder.has_onnx:
        raise ModelError(f"{folder.path} has no {ONNX_FILE}; make one with `goemo export {folder.path} --format onnx`")
    if backend == "torch" and not folder.has_torch_weights:
        hint = " (it is an ONNX export: use --backend onnx)" if folder.has_onnx else ""
        raise ModelError(f"{folder.path} has no model.safetensors{hint}")
    if backend == "tfidf":
        raise ConfigError(f"{folder.path} is not a TF-IDF model; use --backend auto")
    if backend not in ("auto", "fastest"):
        return backend
    if kind == "onnx":
        return "onnx"
    return "fastest" if backend == "fastest" else "torch"


def ranked_choices(
    scores: np.ndarray, on: np.ndarray, *, top_k: int | None = None, threshold: float | None = None
) -> list[list[int]]:
    """Per text, its chosen labels' indices, highest score first (ties: lower index first), as
    `EmotionClassifier.predict` decides them from `EmotionClassifier.decide`'s ``scores`` and ``on``.

    The whole chunk is sorted at once, which keeps the per-text Python work to slicing a list.
    """
    chosen = on.astype(bool)
    if top_k is not None and threshold is None:
        chosen[:] = True
    # Chosen labels sort first (-score <= 0 < 1), by score, highest first; stable: ties by index.
    order = np.argsort(np.where(chosen, -scores, np.float32(1.0)), axis=1, kind="stable")
    counts = chosen.sum(axis=1)
    if top_k is not None:
        counts = np.minimum(counts, int(top_k))
    width = int(counts.max()) if len(counts) else 0  # most texts carry one or two labels: convert only those
    return [row[:c] for row, c in zip(order[:, :width].tolist(), counts.tolist())]


class EmotionClassifier:
    """A model ready to label texts. Thread-safe: concurrent calls share the model; tokenisation (a
    fast tokenizer keeps per-call state) is serialised.

        clf = EmotionClassifier.load("runs/goemo/best", backend="onnx")
        clf.predict_proba(["so happy for you", "ugh"]).shape
        # -> (2, 28)
    """

    def __init__(
        self,
        backend: Any,
        tokenizer: Any,
        label_names: Sequence[str],
        thresholds: np.ndarray,
        *,
        max_length: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        folder: ModelFolder | None = None,
        choice: BackendChoice | None = None,
        calibration: Calibration | None = None,
        long_text: str = "pieces",
        piece_rule: PieceRule = DEFAULT_RULE,
    ) -> None:
        """The parts of a predictor, each resolved: `load` builds them from a folder; training's live
        scorer and tests' stand-in backends call it directly.

        Eleven parameters, each a part the predictor keeps: the backend and its tokenizer, the labels
        and their thresholds, how texts are batched and cut (``max_length``, ``batch_size``,
        ``long_text``, ``piece_rule``), and where the model came from (``folder``, ``choice``,
        ``calibration``). Users go through `load` and its `RunSettings`.
        """
        self._backend = backend
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (len(self.label_names),):
            raise ModelError(f"{len(self.label_names)} labels but {self.thresholds.shape} thresholds")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: expected an integer >= 1")
        if backend.takes_tokens and max_length < 2:
            raise ConfigError(f"max_length={max_length}: expected an integer >= 2")
        if long_text not in MODES:
            raise ConfigError(f"long_text={long_text!r}: expected {' or '.join(MODES)}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.folder = folder
        self.choice = choice  # how `load` chose the backend (None when built directly)
        self.calibration = calibration  # its unfolded parts are applied after the sigmoid
        if calibration is not None and list(calibration.label_names) != self.label_names:
            raise ModelError("the calibration's labels are not the model's")
        self.long_text = long_text
        self.piece_rule = piece_rule
        # Texts over max_length seen so far, pieces they were cut into, texts truncated (/health).
        self.long_text_counts = {"long": 0, "pieces": 0, "truncated": 0}
        self._pad_id = pad_id_of(tokenizer)
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def load(
        cls, path: str | Path | ModelFolder, settings: RunSettings | None = None, **options: Any
    ) -> EmotionClassifier:
        """Open a model folder (``runs/X/best``, an ONNX export of one, or a TF-IDF baseline).

        ``settings`` (a `goemo.core.run_settings.RunSettings`), or its fields as keywords, say how
        it runs. The default backend is ``fastest``, as for ``goemo predict`` and ``serve``, so
        one text gets one answer from every door (`goemo.predict.fastest`); an explicit
        ``precision`` keeps torch. ``backend="auto"`` runs the folder as it is. ``max_length``
        defaults to the trained length; ``precision="auto"`` is bf16 on CUDA, fp32 on CPU; an
        ONNX graph runs in its exported precision. ``long_text``: ``pieces`` (default) or
        ``truncate``. What runs is logged in one line (`describe`): at INFO with ``fastest``,
        where it is news, else at DEBUG.

            clf = EmotionClassifier.load("runs/goemo/best")
            clf.backend, clf.precision
            # -> ('onnx', 'int8')
        """
        run = RunSettings.of(settings, **options)
        backend = run.backend or "fastest"
        device, max_length = run.device, run.max_length
        folder = path if isinstance(path, ModelFolder) else ModelFolder.open(path)
        chosen = choose_backend(folder, backend)
        choice: BackendChoice | None = None
        runner: Any
        tokenizer: Any = None
        if chosen == "tfidf":
            from goemo.predict.tfidf_backend import TfidfBackend  # noqa: PLC0415  (optional extra: scikit-learn, only for this kind)

            if device not in ("auto", "cpu"):
                log.warning("%s is a TF-IDF model: it runs on the CPU, not %s", folder.path, device)
            runner, max_length = TfidfBackend(folder), 0
        else:
            check_max_length(folder, max_length)  # before the weights load: a bad length fails fast
            runs, run_precision = folder, run.precision or "auto"  # the CPU export when `fastest` picked it
            if chosen == "fastest":
                # a damaged folder fails here in one line, as it would under torch, not after an export attempt
                folder.thresholds()
                folder.check_weights()
                folder.check_tokenizer()
                choice = choose_fastest(folder, run)
                chosen, runs, device, run_precision = choice.backend, choice.folder, choice.device, choice.precision
            runs_with = run.replace(device=device, precision=run_precision)
            if chosen == "torch":
                from goemo.predict.torch_backend import load_torch_backend  # noqa: PLC0415  (optional extra: torch, only for this backend)

                runner, tokenizer = load_torch_backend(runs, runs_with)
            else:
                from goemo.predict.onnx_backend import load_onnx_backend  # noqa: PLC0415  (optional extra: onnx, onnxruntime)

                runner, tokenizer = load_onnx_backend(runs, runs_with)
            max_length = choose_max_length(folder, tokenizer, max_length)
        clf = cls(
            runner,
            tokenizer,
            folder.label_names,
            folder.thresholds(),
            max_length=max_length,
            batch_size=run.batch_size or DEFAULT_BATCH_SIZE,
            folder=folder,
            choice=choice,
            calibration=folder.calibration,
            long_text=run.long_text or "pieces",
        )
        log.log(logging.INFO if backend == "fastest" else logging.DEBUG, "%s", clf.describe())
        return clf

    # ------------------------------------------------------------------ what it is

    @property
    def backend(self) -> str:
        return str(self._backend.name)

    @property
    def device(self) -> str:
        return str(self._backend.device)

    @property
    def precision(self) -> str:
        """``int8`` (an int8 ONNX export), ``fp32``, ``bf16`` or ``fp16``."""
        return str(self._backend.precision)

    @property
    def num_threads(self) -> int:
        """The intra-op CPU threads one model call runs on (torch's setting, or the ONNX session's)."""
        return int(getattr(self._backend, "num_threads", 1))

    @property
    def runs_from(self) -> Path | None:
        """The folder the backend loaded: `path`, or the CPU export made from it (``backend="fastest"``)."""
        return self.choice.folder.path if self.choice is not None else self.path

    def describe(self) -> str:
        """What runs, in one line: for the first log line of ``goemo predict`` and ``goemo serve``, and ``/health``.

        EmotionClassifier.load("runs/x/best", backend="fastest").describe()
        # -> 'onnx int8 on cpu, 2 threads (runs/x/best/.onnx-cpu, dev macro-F1 0.531 vs fp32 0.533)'
        """
        threads = self.num_threads
        head = f"{self.backend} {self.precision} on {self.device}, {threads} thread{'s' if threads != 1 else ''}"
        where = str(self.runs_from) if self.runs_from is not None else "in memory"
        note = f", {self.choice.note}" if self.choice is not None and self.choice.note else ""
        return f"{head} ({where}{note}); {self.long_text_rule}"

    @property
    def long_text_rule(self) -> str:
        """What happens to a text longer than `max_length`, in words (`describe`, ``/health``).

        EmotionClassifier.load("runs/x/best").long_text_rule
        # -> 'texts over 64 tokens: pieces (sentences, else 32-token windows overlapping by 16), max of logits'
        """
        if not self._backend.takes_tokens:
            return "texts read whole (TF-IDF)"
        if self.long_text == "truncate":
            return f"texts over {self.max_length} tokens: truncated"
        count = getattr(self.tokenizer, "num_special_tokens_to_add", None)
        capacity = self.max_length - (int(count(pair=False)) if callable(count) else 2)
        return (
            f"texts over {self.max_length} tokens: pieces ({self.piece_rule.describe(capacity)}), {AGGREGATE} of logits"
        )

    @property
    def path(self) -> Path | None:
        return self.folder.path if self.folder is not None else None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the probabilities besides the weights and the texts: the cache key's part.

        EmotionClassifier.load("runs/x/best", precision="bf16").settings
        # -> {'backend': 'torch', 'device': 'cpu', 'precision': 'bf16', 'batch_size': 128, 'max_length': 128, 'long_text': 'pieces'}
        """
        return {
            "backend": self.backend,
            "device": self.device.split(":")[0],
            "precision": self.precision,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "long_text": self.long_text,
        }

    def __repr__(self) -> str:
        return (
            f"EmotionClassifier(path={str(self.path)!r}, backend={self.backend!r}, device={self.device!r}, "
            f"precision={self.precision!r}, labels={self.num_labels})"
        )

    # ------------------------------------------------------------------ scores

    def encode(self, texts: Sequence[str]) -> EncodedSplit:
        """Token ids of ``texts`` (truncated to ``max_length``, unpadded)."""
        with self._tokenizer_lock:  # fast tokenizers are not safe to share across threads
            return encode_texts(texts, self.tokenizer, self.max_length)

    def encode_pieces(self, texts: Sequence[str], encoded: EncodedSplit | None = None) -> Pieces:
        """The pieces the model reads of ``texts`` (`goemo.predict.pieces.encode_pieces`), counted for ``/health``."""
        with self._tokenizer_lock:
            pieces = encode_pieces(texts, self.tokenizer, self.max_length, self.long_text, self.piece_rule, encoded)
            counts = self.long_text_counts
            counts["long"] += pieces.long
            counts["truncated"] += pieces.truncated
            if pieces.mode == "pieces":
                counts["pieces"] += pieces.num_pieces - len(pieces) + pieces.long
        return pieces

    def logits_for_pieces(self, pieces: Pieces) -> np.ndarray:
        """Logits ``(pieces, L)`` of every piece, in order (`Pieces.aggregate` makes them per text)."""
        return self.logits_for_encoded(pieces.encoded)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each whole text, special tokens included: what a server's token limit counts
        (a TF-IDF model's texts count 0)."""
        if self.tokenizer is None:
            return [0] * len(texts)
        with self._tokenizer_lock:
            out = self.tokenizer(
                list(texts),
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                return_length=True,
                verbose=False,
            )
        return [int(n) for n in out["length"]]

    def report_truncation(self, truncated: int, count: int, modes: str = "long_text='truncate'; 'pieces'") -> None:
        """One log line: how many texts of ``count`` truncation cut short (``modes`` as the caller spells them)."""
        if truncated:
            log.info(
                "%d of %d texts were longer than %d tokens and truncated (%s scores all of each text)",
                truncated,
                count,
                self.max_length,
                modes,
            )

    def logits_for_encoded(
        self, encoded: EncodedSplit, *, rank: int = 0, world_size: int = 1, gather: Gather | None = None
    ) -> np.ndarray:
        """Logits ``(n, L)`` float32 of already tokenised texts, in input order; with ``world_size > 1``
        (training on several processes) `goemo.predict.runner.logits_in_order` shares the batches out."""
        return logits_in_order(
            self._backend,
            encoded,
            batch_size=self.batch_size,
            pad_id=self._pad_id,
            num_labels=self.num_labels,
            rank=rank,
            world_size=world_size,
            gather=gather,
        )

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """The backend's logits ``(n, L)`` float32, in input order, before the calibration's unfolded parts.

        A text longer than `max_length` tokens gets, per label, the highest logit of its pieces
        (``long_text="pieces"``), else the logits of its first `max_length` tokens.
        """
        texts = check_texts(texts)
        if self._backend.takes_tokens and not texts:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        return self._text_logits(texts)

    def split_logits(self, split: Split, token_cache_dir: str | Path | None = None) -> np.ndarray:
        """`predict_logits` for a labelled split, reading token ids from the token cache."""
        if not self._backend.takes_tokens:
            return self._backend.logits(split.texts)
        return self._text_logits(split.texts, encode_split(split, self.tokenizer, self.max_length, token_cache_dir))

    def _text_logits(self, texts: Sequence[str], encoded: EncodedSplit | None = None) -> np.ndarray:
        if not self._backend.takes_tokens:
            return self._backend.logits(texts)
        pieces = self.encode_pieces(texts, encoded)
        self.report_truncation(pieces.truncated, len(pieces))
        return pieces.aggregate(self.logits_for_pieces(pieces))

    def predict_proba(self, texts: Sequence[str], taxonomy: str | None = None) -> np.ndarray:
        """Probabilities ``(n, L)`` float32, one column per label of `label_names`, in input order.

        With ``taxonomy`` (e.g. ``"ekman"``), one column per group of that taxonomy, each the
        max of its members' probabilities (`goemo.data.taxonomy.project_probs`).

            clf.predict_proba(["I love it"])[0, clf.label_names.index("love")]
            # -> 0.87
        """
        probs = self.probabilities(self.predict_logits(texts), np.float32)
        tax = self._taxonomy(taxonomy)
        return probs if tax is None else project_probs(probs, self.label_names, tax)

    def probabilities(self, logits: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """Probabilities from this classifier's logits: the sigmoid, then the calibration's unfolded parts,
        in ``dtype``. Every path from logits to probabilities goes through here: one calibration.

            clf.probabilities(clf.predict_logits(["yay"]))
        """
        if self.calibration is None:
            return sigmoid(logits).astype(dtype, copy=False)
        return self.calibration.backend_probabilities(logits, dtype)

    def predict_spans(
        self,
        texts: Sequence[str],
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[dict[str, Any]]:
        """Per text, its labels (as `predict` gives them) and its pieces: where each label sits.

        Each piece is ``{"start", "end", "labels"}``: its characters and the labels it carries on
        its own, decided as the text's are. A text's score is the highest of its pieces', so a
        label the text carries is above threshold in some piece.

            clf.predict_spans(["Great film. The ending made me so sad."])
            # -> [{'labels': [{'label': 'admiration', 'score': 0.71}, {'label': 'sadness', 'score': 0.66}],
            # -> 'pieces': [{'start': 0, 'end': 11, 'labels': [{'label': 'admiration', 'score': 0.71}]},
            # -> {'start': 12, 'end': 38, 'labels': [{'label': 'sadness', 'score': 0.66}]}]}]
        """
        texts = check_texts(texts)
        decisions: dict[str, Any] = {"top_k": top_k, "threshold": threshold, "taxonomy": taxonomy}
        if not self._backend.takes_tokens or not texts:
            labels = self.predict(texts, **decisions)
            return [
                {"labels": row, "pieces": [{"start": 0, "end": len(t), "labels": row}]} for t, row in zip(texts, labels)
            ]
        pieces = self.encode_pieces(texts)
        self.report_truncation(pieces.truncated, len(pieces))
        piece_probs = self.probabilities(self.logits_for_pieces(pieces), np.float32)
        text_probs = pieces.aggregate(piece_probs)  # monotone per label: the max of the maps is the map of the max
        text_labels = self.predict_from_proba(text_probs, **decisions)
        piece_labels = self.predict_from_proba(piece_probs, **decisions)
        spans = pieces.spans.tolist()
        return [
            {
                "labels": text_labels[i],
                "pieces": [
                    {"start": spans[j][0], "end": spans[j][1], "labels": piece_labels[j]} for j in pieces.of_text(i)
                ],
            }
            for i in range(len(texts))
        ]

    # ------------------------------------------------------------------ decisions

    def predict(
        self,
        texts: Sequence[str],
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Per text, the predicted emotions as ``{"label", "score"}`` dicts, highest score first.

        A label is predicted when its probability is above its own threshold (strictly);
        ``threshold`` replaces every label's; ``top_k`` gives the k highest whatever their score,
        or with ``threshold``, at most k above it. With ``taxonomy`` (``"ekman"``, ``"sentiment"``,
        a grouping file) a group scores its members' max and is on when any member is.

            clf.predict(["thanks so much!"], top_k=2)
            # -> [[{'label': 'gratitude', 'score': 0.96}, {'label': 'admiration', 'score': 0.08}]]
        """
        return self.predict_from_proba(self.predict_proba(texts), top_k=top_k, threshold=threshold, taxonomy=taxonomy)

    def predict_from_proba(
        self,
        probs: np.ndarray,
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """`predict` on probabilities from `predict_proba` (no taxonomy there): a server scores many
        requests in one batch, then decides each with its own ``top_k`` and ``threshold``."""
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != self.num_labels:
            raise ConfigError(f"probs must have shape (n, {self.num_labels}), got {probs.shape}")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
            raise ConfigError(f"top_k={top_k!r}: expected an integer >= 1")
        if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
            raise ConfigError(f"threshold={threshold!r}: expected a number in [0, 1]")
        names, scores, on = self.decide(probs, threshold=threshold, taxonomy=taxonomy)
        chosen = ranked_choices(scores, on, top_k=top_k, threshold=threshold)
        return [[{"label": names[j], "score": float(row[j])} for j in idx] for row, idx in zip(scores, chosen)]

    def decide(
        self, probs: np.ndarray, threshold: float | None = None, taxonomy: str | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(label names, scores, 0/1 decisions) for fine-label probabilities, optionally grouped: a group
        is on when any member is, so grouping changes only how finely an emotion is named.

            names, scores, on = clf.decide(clf.predict_proba(["yay"]), taxonomy="ekman")
        """
        # Compared in float32, the probabilities' own precision: a probability printed as 0.3
        # is float32(0.3) > 0.3 in float64, and must not count as above a threshold of 0.3.
        t = self.thresholds if threshold is None else np.float32(threshold)
        on = binarize(probs, t) if len(probs) else np.zeros(probs.shape, np.uint8)
        tax = self._taxonomy(taxonomy)
        if tax is None:
            return list(self.label_names), probs, on
        return list(tax.labels), project_probs(probs, self.label_names, tax), project_labels(on, self.label_names, tax)

    def explain(
        self, texts: Sequence[str], labels: Sequence[str] | str | None = None, *, method: str | None = None
    ) -> list[Explanation]:
        """Per text, the words behind each predicted label (or each of ``labels``), signed
        (`goemo.predict.explain`): ``method`` ``occlusion`` (default) or ``integrated-gradients`` (torch).

            [e] = clf.explain(["thanks so much!"], labels=["gratitude"])
            e.labels[0].top(1)[0].word
            # -> 'thanks'
        """
        return explain_texts(
            self,
            texts,
            labels,
            method=method,
            backend=self._backend,
            tokenizer=self.tokenizer,
            max_length=self.max_length,
        )

    def label_names_for(self, taxonomy: str | None = None) -> list[str]:
        """The label names `predict_proba` columns stand for, with or without a taxonomy."""
        tax = self._taxonomy(taxonomy)
        return list(self.label_names) if tax is None else list(tax.labels)

    def _taxonomy(self, taxonomy: str | None) -> Taxonomy | None:
        """The target taxonomy, or None when there is none or the model already predicts exactly its labels."""
        if taxonomy is None:
            return None
        tax = load_taxonomy(taxonomy)
        if list(tax.labels) == self.label_names:
            return None
        missing = [m for group in (tax.groups or {}).values() for m in group if m not in self.label_names]
        if tax.groups is None or missing:
            raise ConfigError(
                f"taxonomy {taxonomy!r} cannot be derived from this model's labels "
                f"({', '.join(self.label_names[:5])}{', ...' if self.num_labels > 5 else ''})"
            )
        return tax
