"""Put a trained model to work: `EmotionClassifier` labels texts with a PyTorch or ONNX backend.

Speed comes from the shape of the work rather than from tuning knobs: texts are tokenised
once without padding, sorted by length and cut into batches padded only to their own
longest text (`goemo.data.batching`), so a batch of short Reddit comments is not padded to
the longest comment in the file; outputs are put back in input order. PyTorch runs under
``torch.inference_mode``; ONNX Runtime runs the graph written by `goemo.export`.

Decisions use the thresholds stored in the model folder's ``goemo.json`` (per label, tuned
on dev, when present; else its global threshold; else 0.5) and goemo's strict convention
``probability > threshold`` (`goemo.scoring.metrics.binarize`).

Bulk prediction over files (``goemo predict --input``) streams: `predict_file` reads a
``.txt``/``.csv``/``.jsonl`` file in chunks, so a file larger than memory is fine, and writes
the result atomically.

>>> clf = EmotionClassifier.load("runs/goemo/best")              # doctest: +SKIP
>>> clf.predict(["I love it, thank you!"])                        # doctest: +SKIP
[[{'label': 'gratitude', 'score': 0.97}, {'label': 'love', 'score': 0.81}]]
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, TextIO

import numpy as np

from goemo.core.errors import ConfigError, DataError, ModelError
from goemo.core.fileio import atomic_open

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
Backend = Literal["auto", "torch", "onnx"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# A chunk of a streamed file: large enough that length sorting has something to sort,
# small enough that memory stays flat whatever the file size.
DEFAULT_CHUNK = 2048
_MAX_LENGTH_CAP = 512


# ----------------------------------------------------------------------------- backends


class _TorchRunner:
    """Logits from a PyTorch model: inference mode, optional bf16/fp16 autocast."""

    def __init__(self, model: Any, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision

    def __call__(self, input_ids: Any, attention_mask: Any) -> np.ndarray:
        torch = self.torch
        if self.precision == "fp32":
            autocast: Any = contextlib.nullcontext()
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            autocast = torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)
        with torch.inference_mode(), autocast:
            logits = self.model(
                input_ids=input_ids.to(self.device, non_blocking=True),
                attention_mask=attention_mask.to(self.device, non_blocking=True),
            ).logits
        return logits.float().cpu().numpy()


class _OnnxRunner:
    """Logits from an ONNX Runtime session over ``model.onnx`` (inputs input_ids, attention_mask)."""

    def __init__(self, path: Path, device: str, num_threads: int | None) -> None:
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    "device 'cuda' with the onnx backend needs onnxruntime-gpu "
                    "(this onnxruntime has only " + ", ".join(ort.get_available_providers()) + ")"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"cannot load ONNX model {path}: {e}") from None
        self.input_names = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise ModelError(f"{path}: ONNX model lacks input(s) {sorted(missing)}; export it with `goemo export`")

    def __call__(self, input_ids: Any, attention_mask: Any) -> np.ndarray:
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return np.asarray(self.session.run(["logits"], feeds)[0], dtype=np.float32)


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("the onnx backend needs onnxruntime: pip install 'goemo[onnx]'") from None
    return onnxruntime


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but CUDA is not available (CPU-only PyTorch build or no GPU)")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ConfigError(f"device={device!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def _resolve_precision(precision: str, device: str) -> str:
    """'auto' is bf16 (fp16 on GPUs without bf16) on CUDA, fp32 elsewhere.

    On CPUs, bf16 autocast was measured *slower* than fp32 for MiniLM at inference, even
    with AVX512-BF16 (docs/benchmarks.md, "Inference speed"): the per-call casts of the
    weights cost more than the matrix products save at these sizes. ``precision="bf16"``
    still asks for it.
    """
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"precision={precision!r}: expected auto, fp32, bf16 or fp16")
    if precision != "auto":
        if precision == "fp16" and not device.startswith("cuda"):
            raise ConfigError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on CPU")
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _choose_backend(path: Path, backend: str) -> str:
    if backend not in ("auto", "torch", "onnx"):
        raise ConfigError(f"backend={backend!r}: expected auto, torch or onnx")
    has_onnx = (path / ONNX_FILE).is_file()
    has_torch = any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json"))
    if backend == "onnx" and not has_onnx:
        raise ModelError(f"{path} has no {ONNX_FILE}; make one with `goemo export {path} --format onnx`")
    if backend == "torch" and not has_torch:
        hint = " (it is an ONNX export: use --backend onnx)" if has_onnx else ""
        raise ModelError(f"{path} has no model.safetensors{hint}")
    if backend != "auto":
        return backend
    if has_onnx:
        return "onnx"
    if has_torch:
        return "torch"
    raise ModelError(f"{path} holds neither {ONNX_FILE} nor model.safetensors: not a goemo model folder")


def _label_names_from_config(path: Path) -> list[str]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        id2label = config["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{path / 'config.json'}: cannot read the label names (id2label): {e}") from None


def thresholds_from_meta(meta: dict[str, Any], label_names: Sequence[str]) -> np.ndarray:
    """Per-label decision thresholds: tuned ones where ``goemo.json`` has them, else its global one.

    A folder without goemo's metadata (a plain transformers checkpoint) gets 0.5, the point
    where a sigmoid is undecided (`goemo.scoring.metrics.DEFAULT_THRESHOLD`).

    >>> thresholds_from_meta({"thresholds": {"global": 0.3, "per_label": {"joy": 0.2}}}, ["joy", "fear"]).tolist()
    [0.2, 0.3]
    """
    from goemo.scoring.metrics import DEFAULT_THRESHOLD

    info = meta.get("thresholds") or {}
    default = info.get("global", DEFAULT_THRESHOLD)
    per_label = info.get("per_label") or {}
    return np.array([float(per_label.get(n, default)) for n in label_names], dtype=np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings for large negative logits."""
    x = np.asarray(logits, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


# ----------------------------------------------------------------------------- the classifier


class EmotionClassifier:
    """A model folder ready to label texts: tokenizer, backend, label names and thresholds.

    Thread-safe: concurrent calls (a web server's workers) share the model; tokenisation,
    whose fast tokenizer keeps per-call state, is serialised.

    >>> clf = EmotionClassifier.load("runs/goemo/best", backend="onnx")   # doctest: +SKIP
    >>> clf.predict_proba(["so happy for you", "ugh"]).shape               # doctest: +SKIP
    (2, 28)
    """

    def __init__(
        self,
        runner: Callable[[Any, Any], np.ndarray],
        tokenizer: Any,
        label_names: Sequence[str],
        thresholds: np.ndarray,
        *,
        max_length: int,
        batch_size: int = 64,
        meta: dict[str, Any] | None = None,
        path: Path | None = None,
        backend: str = "torch",
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self._runner = runner
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (len(self.label_names),):
            raise ModelError(f"{len(self.label_names)} labels but {self.thresholds.shape} thresholds")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: expected an integer >= 1")
        self.max_length = max_length
        self.batch_size = batch_size
        self.meta = meta or {}
        self.path = path
        self.backend = backend
        self.device = device
        self.precision = precision
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | Path,
        backend: Backend = "auto",
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        *,
        precision: Precision = "auto",
        num_threads: int | None = None,
    ) -> "EmotionClassifier":
        """Open a model folder (``runs/X/best``, or an ONNX export of one).

        ``backend="auto"`` takes ``model.onnx`` when the folder has one (an export) and the
        PyTorch weights otherwise. ``max_length`` defaults to the length the model was trained
        with. ``precision="auto"`` is bf16 on CUDA and fp32 on CPU (see `_resolve_precision`);
        ``num_threads`` sets the CPU threads of the backend (default: all cores).

        >>> clf = EmotionClassifier.load("runs/goemo/best-onnx-int8")   # doctest: +SKIP
        >>> clf.backend
        'onnx'
        """
        from goemo.models.modeling import read_meta

        folder = Path(path)
        if not folder.is_dir():
            raise ModelError(f"model folder {folder} not found")
        from goemo.train import tfidf as baseline

        if baseline.is_tfidf_folder(folder):  # `goemo baseline tfidf`: no tokenizer, no torch
            return baseline.load_classifier(folder, backend=backend, device=device, batch_size=batch_size)
        chosen = _choose_backend(folder, backend)
        dev = _resolve_device(device)
        meta = read_meta(folder)
        if chosen == "torch":
            import torch

            from goemo.models.modeling import load_model

            if num_threads:
                torch.set_num_threads(num_threads)
            loaded = load_model(folder, device=dev)
            tokenizer, names = loaded.tokenizer, loaded.label_names
            prec = _resolve_precision(precision, dev)
            runner: Callable[[Any, Any], np.ndarray] = _TorchRunner(loaded.model, dev, prec)
        else:
            from transformers import AutoTokenizer

            if precision not in ("auto", "fp32"):
                raise ConfigError(
                    f"precision={precision!r} applies to the torch backend; an ONNX graph runs in the precision "
                    f"it was exported with (goemo export --quantize int8 for a smaller, faster one)"
                )
            runner = _OnnxRunner(folder / ONNX_FILE, dev, num_threads)
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot load the tokenizer of {folder}: {e}") from None
            names = list(meta.get("label_names") or _label_names_from_config(folder))
            prec = (meta.get("onnx") or {}).get("quantize") or "fp32"  # what the graph holds
        if meta.get("label_names") and list(meta["label_names"]) != names:
            raise ModelError(f"{folder}: goemo.json label_names disagree with config.json id2label")
        if max_length is None:
            max_length = int(meta.get("max_length") or min(tokenizer.model_max_length, _MAX_LENGTH_CAP))
        if max_length < 2:
            raise ConfigError(f"max_length={max_length}: expected an integer >= 2")
        return cls(
            runner,
            tokenizer,
            names,
            thresholds_from_meta(meta, names),
            max_length=max_length,
            batch_size=batch_size,
            meta=meta,
            path=folder,
            backend=chosen,
            device=dev,
            precision=prec,
        )

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __repr__(self) -> str:
        return (
            f"EmotionClassifier(path={str(self.path)!r}, backend={self.backend!r}, device={self.device!r}, "
            f"precision={self.precision!r}, labels={self.num_labels})"
        )

    # ------------------------------------------------------------------ scores

    def _encode(self, texts: Sequence[str]) -> Any:
        from goemo.data.batching import EncodedSplit, tokenize_texts

        with self._tokenizer_lock:  # fast tokenizers are not safe to share across threads
            flat, offsets = tokenize_texts(texts, self.tokenizer, self.max_length)
        return EncodedSplit(flat, offsets, np.zeros((len(offsets) - 1, 0), np.float32))

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits ``(n, L)`` float32, in input order (length-sorted batches inside)."""
        from goemo.data.batching import collate, eval_batches

        texts = check_texts(texts)
        out = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        if not texts:
            return out
        encoded = self._encode(texts)
        for idx in eval_batches(encoded.lengths, self.batch_size):
            batch = collate(encoded, idx, pad_id=self._pad_id)
            out[idx] = self._runner(batch["input_ids"], batch["attention_mask"])
        return out

    def predict_proba(self, texts: Sequence[str], taxonomy: str | None = None) -> np.ndarray:
        """Probabilities ``(n, L)`` float32, one column per label of `label_names`, in input order.

        With ``taxonomy`` (e.g. ``"ekman"``), one column per group of that taxonomy, each the
        max of its members' probabilities (`goemo.data.taxonomy.project_probs`).

        >>> clf.predict_proba(["I love it"])[0, clf.label_names.index("love")]   # doctest: +SKIP
        0.87
        """
        probs = sigmoid(self.predict_logits(texts))
        if taxonomy is None:
            return probs
        from goemo.data.taxonomy import project_probs

        tax = self._taxonomy(taxonomy)
        return probs if tax is None else project_probs(probs, self.label_names, tax)

    # ------------------------------------------------------------------ decisions

    def predict(
        self,
        texts: Sequence[str],
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Per text, the predicted emotions as ``{"label", "score"}`` dicts, highest score first.

        By default a label is predicted when its probability is above its own threshold
        (strictly). ``threshold`` replaces every label's threshold; ``top_k`` returns the k
        highest-scoring labels whatever their score, or, with ``threshold`` too, at most k of
        those above it. With ``taxonomy="ekman"`` (or ``"sentiment"``, or a grouping file) the
        labels are groups: a group's score is the max of its members' probabilities, and a
        group is predicted when any member is above its own threshold.

        >>> clf.predict(["thanks so much!"], top_k=2)                 # doctest: +SKIP
        [[{'label': 'gratitude', 'score': 0.96}, {'label': 'admiration', 'score': 0.08}]]
        """
        return self.predict_from_proba(self.predict_proba(texts), top_k=top_k, threshold=threshold, taxonomy=taxonomy)

    def predict_from_proba(
        self,
        probs: np.ndarray,
        top_k: int | None = None,
        threshold: float | None = None,
        taxonomy: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """`predict` on probabilities already computed with `predict_proba` (no taxonomy there).

        Lets a caller score many requests' texts in one batch, then decide per request with
        that request's own ``top_k`` and ``threshold``.
        """
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != self.num_labels:
            raise ConfigError(f"probs must have shape (n, {self.num_labels}), got {probs.shape}")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
            raise ConfigError(f"top_k={top_k!r}: expected an integer >= 1")
        if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
            raise ConfigError(f"threshold={threshold!r}: expected a number in [0, 1]")
        names, scores, on = self.decide(probs, threshold=threshold, taxonomy=taxonomy)
        if top_k is not None and threshold is None:
            on = np.ones_like(on)
        results: list[list[dict[str, Any]]] = []
        for row_scores, row_on in zip(scores, on):
            chosen = np.flatnonzero(row_on)
            chosen = chosen[np.argsort(-row_scores[chosen], kind="stable")]
            if top_k is not None:
                chosen = chosen[: int(top_k)]
            results.append([{"label": names[j], "score": float(row_scores[j])} for j in chosen])
        return results

    def decide(
        self, probs: np.ndarray, threshold: float | None = None, taxonomy: str | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(label names, scores, 0/1 decisions) for fine-label probabilities, optionally grouped.

        A group is on when any member is above its threshold, so grouping never changes which
        texts carry an emotion, only how finely it is named.

        >>> names, scores, on = clf.decide(clf.predict_proba(["yay"]), taxonomy="ekman")  # doctest: +SKIP
        """
        from goemo.scoring.metrics import binarize

        # Compared in float32, the probabilities' own precision: a probability printed as 0.3
        # is float32(0.3) > 0.3 in float64, and must not count as above a threshold of 0.3.
        t = self.thresholds if threshold is None else np.float32(threshold)
        on = binarize(probs, t) if len(probs) else np.zeros(probs.shape, np.uint8)
        tax = self._taxonomy(taxonomy) if taxonomy is not None else None
        if tax is None:
            return list(self.label_names), probs, on
        from goemo.data.taxonomy import project_labels, project_probs

        return list(tax.labels), project_probs(probs, self.label_names, tax), project_labels(on, self.label_names, tax)

    def label_names_for(self, taxonomy: str | None = None) -> list[str]:
        """The label names `predict_proba` columns stand for, with or without a taxonomy."""
        tax = self._taxonomy(taxonomy) if taxonomy is not None else None
        return list(self.label_names) if tax is None else list(tax.labels)

    def _taxonomy(self, taxonomy: str) -> Any:
        """The target taxonomy, or None when the model already predicts exactly its labels."""
        from goemo.data.taxonomy import load_taxonomy

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


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate at the boundary: a bare string would otherwise be read as a list of characters."""
    if isinstance(texts, str):
        raise ConfigError("texts must be a list of strings, got one string; wrap it: [text]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


# ----------------------------------------------------------------------------- files


@dataclass
class Record:
    """One text to label, with the id that comes back beside its prediction."""

    id: str
    text: str


def _open_text(path: Path) -> TextIO:
    if not path.is_file():
        raise DataError("file not found", path=path)
    return open(path, encoding="utf-8-sig", newline="")


def read_records(
    path: str | Path | None,
    text_column: str = "text",
    id_column: str | None = None,
    stream: TextIO | None = None,
) -> Iterator[Record]:
    """Stream texts from ``.txt`` (one per line), ``.csv`` (header row) or ``.jsonl``, lazily.

    Ids come from ``id_column`` when given, else they are line numbers (``.txt``, stdin) or
    row numbers counted from 1 (``.csv``, ``.jsonl``). Empty lines of a ``.txt`` file are
    empty texts, so ids stay equal to line numbers; blank lines of a ``.jsonl`` are skipped.
    ``path=None`` reads ``stream`` (stdin) as text lines.

    >>> next(read_records("texts.csv", text_column="body", id_column="id"))   # doctest: +SKIP
    Record(id='a1', text='I love it')
    """
    if path is None:
        yield from _txt_records(stream if stream is not None else sys.stdin)
        return
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".jsonl", ".json"):
        raise DataError(f"unsupported input type {suffix or '(none)'}: expected .txt, .csv or .jsonl", path=path)
    with _open_text(path) as f:
        try:
            if suffix == ".txt":
                if id_column:
                    raise ConfigError("--id-column applies to .csv and .jsonl inputs; .txt ids are line numbers")
                yield from _txt_records(f)
            elif suffix == ".csv":
                yield from _csv_records(f, path, text_column, id_column)
            else:
                yield from _jsonl_records(f, path, text_column, id_column)
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start} of a read block)", path=path) from None


def _txt_records(f: TextIO) -> Iterator[Record]:
    for number, line in enumerate(f, start=1):
        yield Record(str(number), line.rstrip("\r\n"))


def _csv_records(f: TextIO, path: Path, text_column: str, id_column: str | None) -> Iterator[Record]:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        return
    for column in (text_column, id_column):
        if column is not None and column not in header:
            raise DataError(f"no column {column!r} in the header ({', '.join(header)})", path=path, line=1)
    ti = header.index(text_column)
    ii = header.index(id_column) if id_column else None
    for row_number, row in enumerate(reader, start=1):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(
                f"{len(row)} fields, the header has {len(header)}", path=path, line=reader.line_num
            )
        yield Record(row[ii] if ii is not None else str(row_number), row[ti])


def _jsonl_records(f: TextIO, path: Path, text_column: str, id_column: str | None) -> Iterator[Record]:
    row_number = 0
    for line_number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        row_number += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=line_number) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=line_number)
        if text_column not in obj:
            raise DataError("missing", path=path, line=line_number, field=text_column)
        text = obj[text_column]
        if not isinstance(text, str):
            raise DataError(f"expected a string, got {type(text).__name__}", path=path, line=line_number, field=text_column)
        if id_column is not None:
            if id_column not in obj or obj[id_column] is None:
                raise DataError("missing", path=path, line=line_number, field=id_column)
            rid = str(obj[id_column])
        else:
            rid = str(row_number)
        yield Record(rid, text)


def _count_lines(path: Path) -> int | None:
    """Line count for a progress bar's total (a cheap binary pass); None for CSV, whose rows may span lines."""
    if path.suffix.lower() == ".csv":
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class PredictionWriter:
    """Writes predictions as JSON Lines or CSV, one row per text, in the order given."""

    def __init__(
        self,
        stream: TextIO,
        fmt: Literal["jsonl", "csv"],
        label_names: Sequence[str],
        all_scores: bool = False,
        with_text: bool = True,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.label_names = list(label_names)
        self.all_scores = all_scores
        self.with_text = with_text
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            header = ["id"] + (["text"] if with_text else []) + ["labels", "scores"]
            self._csv.writerow(header + (self.label_names if all_scores else []))

    def write(self, record: Record, labels: list[dict[str, Any]], probs: np.ndarray) -> None:
        if self._csv is not None:
            row = [record.id] + ([record.text] if self.with_text else [])
            row += [",".join(d["label"] for d in labels), ",".join(f"{d['score']:.6f}" for d in labels)]
            if self.all_scores:
                row += [f"{p:.6f}" for p in probs]
            self._csv.writerow(row)
            return
        obj: dict[str, Any] = {"id": record.id}
        if self.with_text:
            obj["text"] = record.text
        obj["labels"] = [{"label": d["label"], "score": round(d["score"], 6)} for d in labels]
        if self.all_scores:
            obj["scores"] = {n: round(float(p), 6) for n, p in zip(self.label_names, probs)}
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")


def output_format(path: str | Path | None) -> Literal["jsonl", "csv"]:
    """The format an output file's name asks for (stdout: JSON Lines)."""
    if path is None:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(f"output {path}: expected a .jsonl or .csv file name")


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_records(
    clf: EmotionClassifier,
    records: Iterable[Record],
    writer: PredictionWriter,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Any = None,
) -> int:
    """Label a stream of records chunk by chunk, writing each result in input order; returns the count.

    >>> n = predict_records(clf, read_records("in.txt"), PredictionWriter(sys.stdout, "jsonl", clf.label_names))  # doctest: +SKIP
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size}: expected an integer >= 1")
    count = 0
    for chunk in _chunks(records, chunk_size):
        probs = clf.predict_proba([r.text for r in chunk])
        labels = clf.predict_from_proba(probs, top_k=top_k, threshold=threshold, taxonomy=taxonomy)
        if taxonomy is not None:  # the written scores are those of the groups
            probs = clf.decide(probs, taxonomy=taxonomy)[1]
        for record, row_labels, row_probs in zip(chunk, labels, probs):
            writer.write(record, row_labels, row_probs)
        count += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    return count


def predict_file(
    clf: EmotionClassifier,
    input_path: str | Path | None,
    output_path: str | Path | None = None,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    taxonomy: str | None = None,
    all_scores: bool = False,
    with_text: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = True,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Label every text of a file (or stdin) and write JSON Lines or CSV (or to stdout); returns the count.

    Reads and predicts ``chunk_size`` texts at a time, so memory does not grow with the file.
    The output file is written atomically: it appears whole, or not at all. A tqdm bar on
    stderr shows progress for files (disabled when stderr is not a terminal).

    >>> predict_file(clf, "comments.csv", "labels.jsonl", text_column="body", id_column="id")  # doctest: +SKIP
    10000
    """
    from tqdm import tqdm

    fmt = output_format(output_path)
    names = clf.label_names_for(taxonomy)
    records = read_records(input_path, text_column, id_column, stream=stdin)
    total = _count_lines(Path(input_path)) if input_path is not None and Path(input_path).is_file() else None
    bar = tqdm(
        total=total,
        unit="texts",
        desc="predict",
        file=sys.stderr,
        # None: tqdm shows itself only on a terminal, so logs and pipes stay clean.
        disable=True if (not progress or input_path is None) else None,
        dynamic_ncols=True,
    )
    kwargs = dict(top_k=top_k, threshold=threshold, taxonomy=taxonomy, chunk_size=chunk_size, progress=bar)
    try:
        if output_path is None:
            out = stdout if stdout is not None else sys.stdout
            return predict_records(clf, records, PredictionWriter(out, fmt, names, all_scores, with_text), **kwargs)
        with atomic_open(output_path) as f:
            return predict_records(clf, records, PredictionWriter(f, fmt, names, all_scores, with_text), **kwargs)
    finally:
        bar.close()
