"""How a model runs (`RunSettings`) and where a verb's data comes from (`DataOptions`): one declaration each.

Every verb that runs a model (``predict``, ``serve``, ``evaluate``, ``report``, ``ensemble``,
``compare``, ``sweep``) and the Python API take the same `RunSettings`: backend, device,
precision, batch size, max length, threads and what happens to a text longer than the max
length (``long_text``). Its fields' metadata are the one definition of
the command-line options (`goemo.cli.options` generates them), so each option has one name,
one type and one help text wherever it appears. The same value is the predictor's settings
(`goemo.predict.classifier.EmotionClassifier.load`) and, resolved, the prediction cache's key
and ``goemo.json``'s ``prediction`` record.

A field left at None means "the default": for labelling (the Python API, ``predict``,
``serve``) the fastest backend the machine allows, so one text gets one answer whichever door
it comes in by; for scoring (``evaluate``, ``report``, ``ensemble``) the settings training
scored dev and test with, whose probabilities are cached, so a model has one score.

Kept in core (no numpy, no torch): the CLI declares its options from here at import time.

>>> RunSettings(precision="fp32").replace(batch_size=16)
RunSettings(backend=None, device='auto', precision='fp32', batch_size=16, max_length=None, num_threads=None, long_text=None)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from goemo.core.errors import ConfigError

BACKENDS = ("auto", "fastest", "torch", "onnx", "tfidf")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LONG_TEXT_MODES = ("pieces", "truncate")


def option(default: Any = None, *, help: str, cli: str | None = None, **meta: Any) -> Any:  # noqa: A002
    """A field that is also a command-line option: ``help`` is its one help text, ``cli`` its name
    when not ``--field-name``; ``meta`` adds Typer's checks (``min``, ``max``, ``metavar``)."""
    return field(default=default, metadata={"help": help, "cli": cli, **meta})


@dataclass(frozen=True)
class RunSettings:
    """Backend, device, precision, batch size, max length and CPU threads of one predictor."""

    backend: str | None = option(
        help="fastest | auto | torch | onnx | tfidf. fastest: on a CPU the folder's int8 ONNX export (made once, "
        "kept only if its dev macro-F1 is within 0.005 of fp32, else fp32 ONNX), on a GPU torch bf16; auto: the "
        "folder's own weights (onnx when it holds model.onnx). Default: fastest to label texts; to score a split, "
        "the settings training scored it with."
    )
    device: str = option("auto", help="auto | cpu | cuda | cuda:N | mps")
    precision: str | None = option(
        help="auto | fp32 | bf16 | fp16 (torch backend; auto: bf16 on CUDA, fp32 on a CPU). Given, it keeps torch."
    )
    batch_size: int | None = option(
        help="Texts per forward pass (length-sorted, padded per batch; default 128).", min=1
    )
    max_length: int | None = option(
        help="Tokens per text or piece (default: the length the model was trained with).", min=2
    )
    num_threads: int | None = option(help="CPU threads of the model (default: all cores).", min=1)
    long_text: str | None = option(
        help="pieces | truncate: a text longer than --max-length tokens is scored sentence by sentence (windows of "
        "32 tokens overlapping by 16 where a sentence is too long or has no end), each label's score the max over "
        "its pieces; truncate reads only its first --max-length tokens. Default: pieces; to score a split, as "
        "training scored it (pieces unless a text it scored was truncated)."
    )

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: expected {', '.join(BACKENDS)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: expected {', '.join(PRECISIONS)}")
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r}: expected auto, cpu, cuda, cuda:N or mps")
        for name in ("batch_size", "num_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r}: expected an integer >= 1")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ConfigError(f"max_length={self.max_length!r}: expected an integer >= 2")
        if self.long_text is not None and self.long_text not in LONG_TEXT_MODES:
            raise ConfigError(f"long_text={self.long_text!r}: expected {' or '.join(LONG_TEXT_MODES)}")

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    @property
    def is_default(self) -> bool:
        """Nothing asked for but the device: a scoring verb may read training's cached probabilities."""
        asked = (self.backend, self.precision, self.batch_size, self.max_length, self.long_text)
        return all(value is None for value in asked)

    @classmethod
    def of(cls, settings: RunSettings | None = None, **changes: Any) -> RunSettings:
        """``settings`` (or the defaults) with ``changes`` that are not None: the Python API's keyword form."""
        base = settings or cls()
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown run settings: {', '.join(sorted(unknown))}")
        return base.replace(**given) if given else base


@dataclass(frozen=True)
class DataOptions:
    """The command-line options that say where a verb's split comes from (`goemo.data.source.DataSource`).

    All None: the data the model was trained on (``goemo.json``'s ``data_source``).
    """

    data_dir: str | None = option(
        help="GoEmotions folder (train/dev/test.tsv, emotions.txt). Default: the model's training data.",
        path=True,
    )
    dataset: str | None = option(
        help="Hugging Face dataset instead of --data-dir: a Hub id (go_emotions), a save_to_disk or parquet folder, "
        "or local CSV/JSON Lines files (read by goemo's own readers). Default: the model's, if trained on one."
    )
    dataset_config: str | None = option(help="Configuration of --dataset, e.g. simplified for go_emotions.")
    text_column: str | None = option(help="Text column of CSV/JSON Lines files and of --dataset (default: text).")
    label_column: str | None = option(
        help="Label column of CSV/JSON Lines files and of --dataset (default: labels, else label)."
    )

    @property
    def given(self) -> bool:
        return any(v is not None for v in dataclasses.asdict(self).values())
