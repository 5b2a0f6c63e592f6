"""The GoEmotions paper's reported test results, as data: Table 4 (28 labels) and Table 5.

Demszky et al., "GoEmotions: A Dataset of Fine-Grained Emotions", ACL 2020 (arXiv 2005.00547):
BERT-base fine-tuned on the training split, evaluated on the test split at threshold 0.3.
The numbers live in ``paper_reference.json`` beside this module, each table with a note on
how it was checked, so a report can put them next to a model's own scores and say where
they come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's result tables: per-label and macro (precision, recall, F1).

    >>> t = paper_table("goemotions")
    >>> t.table, t.labels["gratitude"], t.macro
    ('Table 4', (0.79, 0.95, 0.86), (0.4, 0.63, 0.46))
    """

    taxonomy: str
    table: str
    caption: str
    labels: dict[str, Triple]
    macro: Triple
    std: Triple
    verification: str
    threshold: float
    citation: str
    url: str


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    text = resources.files("goemo").joinpath("report", "paper_reference.json").read_text(encoding="utf-8")
    return json.loads(text)


def citation() -> str:
    """'Demszky et al., "GoEmotions: …", ACL 2020 (arXiv 2005.00547)'."""
    src = _data()["source"]
    first = src["authors"].split(",")[0].split()[-1]
    return f'{first} et al., "{src["title"]}", ACL 2020 (arXiv {src["arxiv"]})'


def paper_table(taxonomy: str) -> PaperTable | None:
    """The paper's table for ``taxonomy`` ("goemotions", "ekman", "sentiment"), else None."""
    data = _data()
    raw = data["tables"].get(str(taxonomy))
    if raw is None:
        return None
    return PaperTable(
        taxonomy=str(taxonomy),
        table=raw["table"],
        caption=raw["caption"],
        labels={k: tuple(v) for k, v in raw["labels"].items()},
        macro=tuple(raw["macro"]),
        std=tuple(raw["std"]),
        verification=raw["verification"],
        threshold=float(data["threshold"]),
        citation=citation(),
        url=data["source"]["url"],
    )
