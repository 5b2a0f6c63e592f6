"""``goemo explain``: the words behind each emotion a model finds, highlighted in the terminal or as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any, Optional

import typer
from rich.color import Color
from rich.console import Console
from rich.style import Style
from rich.text import Text

from goemo.cli.common import Opt, command, make_console
from goemo.cli.options import gather, with_options
from goemo.core.errors import ConfigError
from goemo.core.run_settings import RunSettings

CHUNK = 64  # texts explained per call: output streams, memory stays flat on a long file
POSITIVE = (46, 160, 67)  # green: the word raises the label
NEGATIVE = (209, 73, 91)  # red: the word lowers it
SHOWN_FROM = 0.15  # words whose attribution is under this share of the largest are left plain
SHOWN_NUMBER = 0.0005  # listed words: those whose number does not print as 0.000


class Method(str, Enum):
    occlusion = "occlusion"
    integrated_gradients = "integrated-gradients"


class Format(str, Enum):
    text = "text"
    json = "json"


@command(
    "explain",
    epilog=(
        "Example: goemo explain --model runs/goemo/best 'Thank you so much, this made my day!'   "
        "or: goemo explain --model runs/goemo/best --labels joy,anger --format json --input comments.txt"
    ),
)
@with_options(RunSettings)
def explain_command(
    texts: Optional[list[str]] = typer.Argument(
        None, help="Texts to explain (default: --input, else one text per stdin line)."
    ),
    model: Path = Opt(..., "--model", help="Model folder: runs/NAME/best, or an ONNX export of one."),
    input_file: Optional[Path] = Opt(None, "--input", help="A .txt (one text per line), .csv or .jsonl file."),
    text_column: str = Opt("text", help="Text column of a .csv/.jsonl input."),
    id_column: Optional[str] = Opt(None, help="Id column of a .csv/.jsonl input (default: row numbers)."),
    labels: Optional[str] = Opt(
        None,
        "--labels",
        metavar="NAMES",
        help="Comma-separated labels to explain, e.g. joy,anger (default: the predicted ones, else the most probable).",
    ),
    method: Method = Opt(
        Method.occlusion,
        "--method",
        help="occlusion: delete each word, any backend; integrated-gradients: captum on a torch model "
        "(pip install 'goemo[explain]').",
    ),
    fmt: Format = Opt(Format.text, "--format", help="text: highlighted words; json: one JSON line per text."),
    top: int = Opt(5, min=0, help="Words listed under each label in the text format (highest first)."),
    **options: Any,
) -> None:
    """Show which words make the model predict each emotion: signed, per word as written.

    Green words raise the label's probability, red ones lower it, the stronger the more. For
    each predicted label (or each of --labels) the text format lists the label's score and its
    strongest words; --format json gives every word's number with its character span.
    Occlusion, the default, deletes each word in turn and scores every variant in one batch
    through the same model (docs/predict-and-serve.md, "Explanations").
    """
    from goemo.data.records import Record, read_records
    from goemo.predict.classifier import EmotionClassifier  # numpy, and torch or onnxruntime when loaded

    if texts and input_file is not None:
        raise ConfigError("give texts as arguments or --input FILE, not both")
    if not texts and input_file is None and sys.stdin.isatty():
        raise ConfigError("no texts: give them as arguments, with --input FILE, or on stdin (one per line)")
    settings = gather(RunSettings, options)
    if method is Method.integrated_gradients and settings.backend is None:
        settings = settings.replace(backend="torch")  # the gradients are torch's; fastest would pick ONNX on a CPU
    clf = EmotionClassifier.load(model, settings)
    clf.explain([], labels)  # an unknown label fails before any text is read
    if texts:
        records: Iterable[Record] = [Record(str(i), t) for i, t in enumerate(texts, start=1)]
    elif input_file is not None:
        records = read_records(input_file, text_column, id_column)
    else:
        records = read_records(None, stream=sys.stdin)
    console = make_console()
    for chunk in _chunks(records, CHUNK):
        explained = clf.explain([r.text for r in chunk], labels, method=method.value)
        for record, explanation in zip(chunk, explained):
            if fmt is Format.json:
                typer.echo(json.dumps({"id": record.id, **explanation.to_dict()}, ensure_ascii=False))
            else:
                print_explanation(console, record.id, explanation, top)


def _chunks(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def highlighted(text: str, words: Iterable[Any]) -> Text:
    """``text`` with each word's background green (raises the label) or red (lowers it), by its share of the largest."""
    words = list(words)
    out = Text(text)
    largest = max((abs(w.attribution) for w in words), default=0.0)
    if largest <= 0:
        return out
    for w in words:
        share = abs(w.attribution) / largest
        if share < SHOWN_FROM:
            continue
        r, g, b = POSITIVE if w.attribution > 0 else NEGATIVE
        mix = 0.25 + 0.75 * share
        bg = Color.from_rgb(*(round(255 + (c - 255) * mix) for c in (r, g, b)))
        out.stylize(Style(bgcolor=bg, color="black", bold=share >= 0.5), w.start, w.end)
    return out


def print_explanation(console: Console, record_id: str, explanation: Any, top: int) -> None:
    console.print(Text(f"[{record_id}] ", style="dim") + Text(explanation.text))
    for label in explanation.labels:
        head = Text(f"  {label.label} {label.score:.3f} ", style="bold")
        console.print(head + Text(f"({label.method})  ", style="dim") + highlighted(explanation.text, label.words))
        if top:
            listed = [w for w in label.top(top) if w.attribution >= SHOWN_NUMBER]
            against = sorted((w for w in label.words if w.attribution <= -SHOWN_NUMBER), key=lambda w: w.attribution)[
                :2
            ]
            line = "    for: " + (", ".join(f"{w.word} {w.attribution:+.3f}" for w in listed) or "none")
            if against:
                line += "; against: " + ", ".join(f"{w.word} {w.attribution:+.3f}" for w in against)
            console.print(Text(line, style="dim"), soft_wrap=True)
