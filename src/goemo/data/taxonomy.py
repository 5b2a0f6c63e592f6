"""Label sets and their groupings, as data.

A taxonomy is a list of label names plus, for grouped taxonomies, which fine labels each
group gathers. Mapping is then one matrix product, never an ``if name == "ekman"`` branch,
so a user-supplied grouping file works exactly like the built-in ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from goemo.core.errors import ConfigError, DataError, json_problem
from goemo.data.split import Split

BUILTIN = ("goemotions", "ekman", "sentiment")
NEUTRAL = "neutral"
OWN_LABELS = "own"  # a model's taxonomy when its labels are none of these: the user's own label set
_GROUP_FILES = {"ekman": "ekman_mapping.json", "sentiment": "sentiment_dict.json"}


@dataclass(frozen=True)
class Taxonomy:
    """A label set; ``groups`` maps each label to the source labels it gathers (None = flat).

    >>> t = load_taxonomy("ekman")
    >>> t.labels[-1], t.groups["fear"]
    ('neutral', ('fear', 'nervousness'))
    """

    name: str
    labels: tuple[str, ...]
    groups: dict[str, tuple[str, ...]] | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def membership(self, source_labels: Sequence[str]) -> np.ndarray:
        """``(L_source, L_self)`` 0/1 matrix: entry (i, j) is 1 when source label i belongs to group j."""
        index = {name: i for i, name in enumerate(source_labels)}
        m = np.zeros((len(source_labels), self.num_labels), dtype=np.uint8)
        for j, label in enumerate(self.labels):
            members = self.groups.get(label, (label,)) if self.groups else (label,)
            for member in members:
                if member not in index:
                    raise ConfigError(
                        f"taxonomy {self.name!r}: label {member!r} of group {label!r} is not among the source labels"
                    )
                m[index[member], j] = 1
        return m


def load_taxonomy(name: str | Path = "goemotions", data_dir: str | Path | None = None) -> Taxonomy:
    """Load a built-in taxonomy by name, or a grouping JSON file ``{"group": [labels...]}``.

    Built-ins read the files that ship inside the package (or ``data_dir`` when given, so a
    user's own copy of ``emotions.txt`` wins). Grouped taxonomies keep ``neutral`` as its own
    label, as in the paper's Table 5.
    """
    base = Path(data_dir) if data_dir else None

    def read(filename: str) -> str:
        if base is not None and (base / filename).is_file():
            return (base / filename).read_text(encoding="utf-8-sig")
        return resources.files("goemo").joinpath("labels", filename).read_text(encoding="utf-8")

    fine = tuple(line.strip() for line in read("emotions.txt").splitlines() if line.strip())
    key = str(name)
    if key == "goemotions":
        return Taxonomy("goemotions", fine)
    if key in _GROUP_FILES:
        groups_text, origin = read(_GROUP_FILES[key]), _GROUP_FILES[key]
    elif Path(key).suffix == ".json" and Path(key).is_file():
        groups_text, origin, key = Path(key).read_text(encoding="utf-8-sig"), key, Path(key).stem
    else:
        raise ConfigError(f"unknown taxonomy {name!r}: expected one of {', '.join(BUILTIN)} or a grouping .json file")
    try:
        raw = json.loads(groups_text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {json_problem(e)}", path=origin, line=e.lineno) from None
    groups = _parse_groups(raw, origin)
    if NEUTRAL in fine and NEUTRAL not in groups:
        groups[NEUTRAL] = (NEUTRAL,)
    tax = Taxonomy(key, tuple(groups), groups)
    tax.membership(fine)  # validate that every member is a known fine label
    return tax


def labels_said(taxonomy: str, code: bool = False) -> str:
    """How cards and reports name a model's label set: its taxonomy, or labels of its own.

    >>> labels_said("own"), labels_said("ekman", code=True)
    ('labels of its own', 'taxonomy `ekman`')
    """
    if taxonomy == OWN_LABELS:
        return "labels of its own"
    return f"taxonomy `{taxonomy}`" if code else f"taxonomy {taxonomy}"


def _parse_groups(raw: object, origin: str) -> dict[str, tuple[str, ...]]:
    """Check the shape ``{"group": ["label", ...]}``: a bare string would be split into letters,
    and an empty group has no probability to take the max of."""
    if not isinstance(raw, dict):
        raise ConfigError(f'{origin}: expected a JSON object {{"group": [labels...]}}, got {type(raw).__name__}')
    groups: dict[str, tuple[str, ...]] = {}
    for group, members in raw.items():
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{origin}: group {group!r} must be a non-empty list of label names, got {members!r}")
        groups[str(group)] = tuple(members)
    return groups


def project_labels(labels: np.ndarray, source_labels: Sequence[str], target: Taxonomy) -> np.ndarray:
    """Map a multi-hot matrix to ``target``: a group is on when any of its members is on."""
    m = target.membership(source_labels)
    return ((labels.astype(np.int32) @ m) > 0).astype(np.uint8)


def project_split(split: Split, target: Taxonomy) -> Split:
    """``split`` with its labels mapped to ``target`` (`project_labels`); a flat ``target`` keeps it as it is."""
    if target.groups is None:
        return split
    labels = project_labels(split.labels, split.label_names, target)
    return dataclasses.replace(split, labels=labels, label_names=list(target.labels))


def project_probs(probs: np.ndarray, source_labels: Sequence[str], target: Taxonomy) -> np.ndarray:
    """Map probabilities to ``target``: a group's probability is the max of its members'.

    Max (not sum) keeps values in [0, 1] and agrees with `project_labels` at any threshold:
    the group is predicted exactly when at least one member is.
    """
    m = target.membership(source_labels).astype(bool)
    out = np.zeros((probs.shape[0], target.num_labels), dtype=probs.dtype)
    for j in range(target.num_labels):
        out[:, j] = probs[:, m[:, j]].max(axis=1)
    return out
