"""Hugging Face ``datasets`` as a data source: a Hub id or a local dataset, read into goemo `Split`s.

``goemo train --dataset NAME_OR_PATH`` (and ``evaluate``, ``stats``, ``sweep``) reads through
`load_hf_dataset`:

- a Hub id (``go_emotions`` with config ``simplified``) goes to ``datasets.load_dataset``, which
  honours ``HF_DATASETS_OFFLINE`` and the cache under ``HF_HOME``;
- a folder written by ``save_to_disk`` is opened with ``datasets.load_from_disk``;
- any other local folder (parquet, CSV or JSON files named by split) or a single data file is
  read by ``datasets.load_dataset`` with the builder its suffix names.

Splits ``train`` / ``validation`` / ``test`` become goemo's ``train`` / ``dev`` / ``test``.
The label column may be a ``Sequence(ClassLabel)`` (label ids; the names come from the
feature, as in ``go_emotions``), a single ``ClassLabel``, a list of 0/1 values (multi-hot; the
names from ``label_names``, else ``label_0, label_1, ...``) or strings of label names. A row
with something else is refused with the split, the column and the row number.

``datasets`` is an optional extra (``pip install goemo[train]``) and is imported only when a
dataset is read, so prediction and ``goemo --help`` never pay for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goemo.core.errors import ConfigError, DataError
from goemo.data.io import split_label_list
from goemo.data.split import Split
from goemo.data.taxonomy import Taxonomy, load_taxonomy, project_split

logger = logging.getLogger(__name__)

# The dataset's split names and goemo's: validation (or dev) is the split that selects models.
SPLIT_NAMES = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
# A single local file: the ``datasets`` builder that reads it.
FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
DEFAULT_LABEL_COLUMNS = ("labels", "label")
ID_COLUMN = "id"
_STRING_DTYPES = ("string", "large_string")
_MULTI_HOT_DTYPES = frozenset(
    ["bool", "float16", "float32", "float64"] + [f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)]
)


def describe(name: str | Path, config: str | None = None) -> str:
    """How a dataset is named in messages and in `Split.source`: ``NAME`` or ``NAME/CONFIG``.

    >>> describe("go_emotions", "simplified")
    'go_emotions/simplified'
    """
    return f"{name}/{config}" if config else str(name)


def goemo_split_name(name: str) -> str:
    """goemo's name for a dataset split: ``validation`` is ``dev``; other names are kept.

    >>> goemo_split_name("validation"), goemo_split_name("test"), goemo_split_name("extra")
    ('dev', 'test', 'extra')
    """
    return SPLIT_NAMES.get(name, name)


def load_hf_dataset(
    name: str | Path,
    config: str | None = None,
    *,
    splits: Sequence[str] | None = None,
    text_column: str = "text",
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    taxonomy: str | Path | Taxonomy = "goemotions",
    cache_dir: str | Path | None = None,
) -> dict[str, Split]:
    """Read a Hugging Face dataset into goemo `Split`s, keyed by goemo's split names.

    ``name`` is a Hub id or a local folder / file; ``config`` the dataset's configuration
    (``simplified``). ``splits`` picks some (``"dev"`` and ``"validation"`` both name the
    validation split); by default every split is read. ``text_column`` holds the texts,
    ``label_column`` the labels (default ``labels``, else ``label``); an ``id`` column gives
    the ids, else the row numbers do. ``label_names`` names the labels of a column whose
    feature carries none (a multi-hot list, plain ids or names); a ``ClassLabel`` column's
    own names must equal them when both are given. ``taxonomy`` ``"ekman"`` / ``"sentiment"``
    (or a grouping file) maps GoEmotions labels to groups, as `goemo.data.io.load_goemotions`
    does. ``cache_dir`` is where ``datasets`` caches what it prepares (default: its own, under
    ``HF_HOME``).

        data = load_hf_dataset("go_emotions", "simplified")
        sorted(data), data["dev"].source
        # -> (['dev', 'test', 'train'], 'dataset go_emotions/simplified:validation')
        mine = load_hf_dataset("data/my_dataset", taxonomy="ekman")  # a save_to_disk folder
    """
    where = describe(name, config)
    parts = _select(open_hf_dataset(name, config, cache_dir=cache_dir), where, splits)
    columns = _Columns(text_column, label_column, label_names)
    rows = {key: columns.read(ds, f"dataset {where}:{hf_name}") for key, (hf_name, ds) in parts.items()}
    names = columns.names(rows.values(), where)
    target = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
    out: dict[str, Split] = {}
    for key, raw in rows.items():
        split = Split(raw.texts, raw.ids, columns.matrix(raw, names), list(names), key, raw.source)
        try:
            out[key] = project_split(split, target)
        except ConfigError as e:
            raise ConfigError(f"dataset {where}: --taxonomy {target.name}: {e}") from None
        logger.debug("read %d rows, %d labels from %s", len(raw.texts), out[key].num_labels, raw.source)
    return out


def open_hf_dataset(name: str | Path, config: str | None = None, *, cache_dir: str | Path | None = None) -> Any:
    """The ``datasets`` object ``name`` stands for (a ``DatasetDict`` or a ``Dataset``); errors in one line.

    A folder written by ``save_to_disk`` is opened with ``load_from_disk``; another local folder
    or a file is read by ``load_dataset``; anything else is a Hub id, found in the cache or
    downloaded (``HF_DATASETS_OFFLINE=1``: the cache only).
    """
    import datasets  # noqa: PLC0415  (optional extra: train/datasets)
    from datasets.exceptions import DatasetsError  # noqa: PLC0415  (optional extra: train/datasets)

    where = describe(name, config)
    path = Path(name).expanduser()
    cache = None if cache_dir is None else str(cache_dir)
    try:
        if path.is_dir() and _saved_to_disk(path):
            if config:
                raise ConfigError(
                    f"--dataset-config {config!r}: {path} was written by save_to_disk, which has no configurations"
                )
            return datasets.load_from_disk(str(path))
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ConfigError(
                    f"dataset {path}: unsupported file type {path.suffix or '(none)'!r}: expected "
                    f"{', '.join(FILE_BUILDERS)}, or a folder"
                )
            return datasets.load_dataset(builder, config, data_files=str(path), cache_dir=cache)
        if path.is_dir():
            return datasets.load_dataset(str(path), config, cache_dir=cache)
        if _looks_like_a_path(str(name)):
            raise DataError("no such file or folder (a local dataset, or a Hub id like go_emotions)", path=name)
        return datasets.load_dataset(str(name), config, cache_dir=cache)
    except ConnectionError as e:
        raise DataError(_unreachable(where, e)) from None
    except (FileNotFoundError, DatasetsError, ValueError) as e:  # not on the Hub, a bad config, unreadable files
        raise DataError(f"dataset {where}: cannot be read: {_first_line(e)}") from None


def _saved_to_disk(path: Path) -> bool:
    """A folder `Dataset.save_to_disk` or `DatasetDict.save_to_disk` wrote (their manifest files)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _looks_like_a_path(name: str) -> bool:
    """A missing local path, not a Hub id: explicit folders, or a data file's suffix."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1  # a Hub id is NAME or OWNER/NAME
        or "\\" in name
        or Path(name).suffix.lower() in FILE_BUILDERS
    )


def _unreachable(where: str, error: Exception) -> str:
    offline = os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    home = os.environ.get("HF_HOME") or "~/.cache/huggingface"
    why = "HF_DATASETS_OFFLINE is set" if offline else f"the Hub cannot be reached ({_first_line(error)})"
    return (
        f"dataset {where}: not a local file or folder, not in the Hugging Face cache (HF_HOME={home}), "
        f"and {why}; load it once with network into that cache (HF_DATASETS_OFFLINE=1 then reads the cache only), "
        "or give a local folder or file"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _select(loaded: Any, where: str, wanted: Sequence[str] | None) -> dict[str, tuple[str, Any]]:
    """goemo split name -> (the dataset's split name, its ``Dataset``), for the splits asked for."""
    if hasattr(loaded, "keys"):  # a DatasetDict
        parts = {str(k): loaded[k] for k in loaded.keys()}
    else:  # one Dataset saved on its own: its split name, if it knows it
        parts = {str(loaded.split) if loaded.split else "train": loaded}
    by_goemo: dict[str, tuple[str, Any]] = {}
    for hf_name, ds in parts.items():
        key = goemo_split_name(hf_name)
        if key in by_goemo:
            raise DataError(
                f"dataset {where}: splits {by_goemo[key][0]!r} and {hf_name!r} would both be goemo's {key!r}"
            )
        by_goemo[key] = (hf_name, ds)
    if wanted is None:
        return by_goemo
    out = {}
    for name in wanted:
        key = goemo_split_name(name)
        if key not in by_goemo:
            raise ConfigError(f"dataset {where} has no {name!r} split (it has {', '.join(parts) or 'none'})")
        out[key] = by_goemo[key]
    return out


# ----------------------------------------------------------------------------- columns


@dataclass
class _Rows:
    """One split's texts, ids and raw label values, checked against the features."""

    texts: list[str]
    ids: list[str]
    values: list[Any]
    kind: str  # "ids" (lists of label ids), "id" (one id), "multi_hot", "names" (label names)
    feature_names: list[str] | None
    source: str
    column: str


class _Columns:
    """Which columns hold what, and how the label column's feature is read."""

    def __init__(self, text_column: str, label_column: str | None, label_names: Sequence[str] | None) -> None:
        if label_names is not None:
            label_names = [str(n) for n in label_names]
            if not label_names or len(set(label_names)) != len(label_names):
                raise ConfigError("label names must be a non-empty list without duplicates")
        self.text = text_column
        self.label = label_column
        self.given_names = label_names

    def read(self, ds: Any, source: str) -> _Rows:
        features = ds.features
        columns = list(features)
        label = self.label or next((c for c in DEFAULT_LABEL_COLUMNS if c in features), None)
        if self.text not in features:
            raise ConfigError(
                f"{source}: no text column {self.text!r} (columns: {', '.join(columns)}); use --text-column"
            )
        if label is None or label not in features:
            asked = repr(label) if label else f"{' or '.join(map(repr, DEFAULT_LABEL_COLUMNS))}"
            raise ConfigError(f"{source}: no label column {asked} (columns: {', '.join(columns)}); use --label-column")
        text_feature = features[self.text]
        if not (_is_value(text_feature) and text_feature.dtype in _STRING_DTYPES):
            raise DataError(
                f"expected a text column (Value('string')), got {text_feature}", path=source, field=self.text
            )
        kind, names = _label_kind(features[label], source, label)
        wanted = [self.text, label] + ([ID_COLUMN] if ID_COLUMN in features and ID_COLUMN != label else [])
        table = ds.select_columns(wanted).to_dict()
        texts = table[self.text]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"row {i}: expected a string, got {_got(text)}", path=source, field=self.text)
        if ID_COLUMN in table:
            ids = [str(v) for v in table[ID_COLUMN]]
            bad = next((i for i, v in enumerate(table[ID_COLUMN]) if v is None), None)
            if bad is not None:
                raise DataError(f"row {bad}: empty id", path=source, field=ID_COLUMN)
        else:
            ids = [str(i) for i in range(len(texts))]
        if not texts:
            raise DataError("no rows", path=source)
        return _Rows(texts, ids, table[label], kind, names, source, label)

    def names(self, splits: Iterable[_Rows], where: str) -> list[str]:
        """The label names of every split: the feature's, the given ones, or what the rows hold."""
        splits = list(splits)
        first = splits[0]
        for other in splits[1:]:
            if (other.column, other.kind, other.feature_names) != (first.column, first.kind, first.feature_names):
                raise DataError(
                    f"dataset {where}: splits {first.source.rpartition(':')[2]!r} and "
                    f"{other.source.rpartition(':')[2]!r} have different label features",
                    field=first.column,
                )
        given = self.given_names
        if first.feature_names is not None:
            if given is not None and given != first.feature_names:
                raise ConfigError(
                    f"dataset {where}: column {first.column!r} names its labels {_short(first.feature_names)}, "
                    f"not the label names given {_short(given)}"
                )
            return list(first.feature_names)
        if given is not None:
            return list(given)
        if first.kind == "multi_hot":
            width = len(first.values[0]) if first.values and isinstance(first.values[0], list) else 0
            return [f"label_{j}" for j in range(width)]
        if first.kind == "names":
            seen = {t for rows in splits for i, value in enumerate(rows.values) for t in _tokens(value, rows, i)}
            return sorted(seen)
        raise ConfigError(
            f"dataset {where}: column {first.column!r} holds label ids but no label names: give a label-names "
            "file (--labels) or cast the column to ClassLabel"
        )

    def matrix(self, rows: _Rows, names: list[str]) -> np.ndarray:
        """The ``(n, L)`` 0/1 label matrix of one split."""
        n, width = len(rows.values), len(names)
        labels = np.zeros((n, width), dtype=np.uint8)
        if rows.kind == "multi_hot":
            for i, value in enumerate(rows.values):
                labels[i] = _multi_hot(value, width, rows, i)
            return labels
        index = {name: j for j, name in enumerate(names)}
        for i, value in enumerate(rows.values):
            if rows.kind in ("ids", "id"):
                ids = value if rows.kind == "ids" else [value]
                if not isinstance(ids, list):
                    raise _row_error(rows, i, f"expected a list of label ids, got {_got(value)}")
                for label_id in ids:
                    if not isinstance(label_id, int) or isinstance(label_id, bool) or not 0 <= label_id < width:
                        raise _row_error(rows, i, f"label id {label_id!r} out of range (expected 0..{width - 1})")
                    labels[i, label_id] = 1
            else:
                for token in _tokens(value, rows, i):
                    labels[i, _resolve(token, index, rows, i)] = 1
        return labels


def _is_value(feature: Any) -> bool:
    import datasets  # noqa: PLC0415  (optional extra: train/datasets)

    return isinstance(feature, datasets.Value)


def _list_item(feature: Any) -> Any:
    """The item feature of a list feature (``List``/``LargeList``/``Sequence``, or a bare ``[feature]``), else None."""
    import datasets  # noqa: PLC0415  (optional extra: train/datasets)

    if isinstance(feature, list) and len(feature) == 1:
        return feature[0]
    kinds = tuple(
        getattr(datasets, n) for n in ("List", "LargeList", "Sequence") if isinstance(getattr(datasets, n, None), type)
    )
    if kinds and isinstance(feature, kinds):
        return feature.feature
    return None


def _label_kind(feature: Any, source: str, column: str) -> tuple[str, list[str] | None]:
    """How a label column is read, from its feature, and the names the feature carries."""
    import datasets  # noqa: PLC0415  (optional extra: train/datasets)

    if isinstance(feature, datasets.ClassLabel):
        return "id", list(feature.names)
    item = _list_item(feature)
    if isinstance(item, datasets.ClassLabel):
        return "ids", list(item.names)
    if _is_value(item) and item.dtype in _MULTI_HOT_DTYPES:
        return "multi_hot", None
    if (_is_value(item) and item.dtype in _STRING_DTYPES) or (_is_value(feature) and feature.dtype in _STRING_DTYPES):
        return "names", None
    if _is_value(feature) and feature.dtype.startswith(("int", "uint")):
        return "id", None
    raise DataError(
        f"unsupported label feature {feature}: expected Sequence(ClassLabel) or ClassLabel (label ids), "
        "a list of 0/1 values (multi-hot), or label names (strings)",
        path=source,
        field=column,
    )


def _multi_hot(value: Any, width: int, rows: _Rows, i: int) -> list[int]:
    if not isinstance(value, list):
        raise _row_error(rows, i, f"expected a multi-hot list of {width} values 0/1, got {_got(value)}")
    if len(value) != width:
        raise _row_error(
            rows,
            i,
            f"expected a multi-hot list of {width} values 0/1, got {len(value)} values "
            "(a list of label ids needs the column cast to Sequence(ClassLabel(names=...)))",
        )
    for v in value:
        if v not in (0, 1):
            raise _row_error(rows, i, f"expected 0 or 1 in a multi-hot list, got {v!r}")
    return [int(v) for v in value]


def _tokens(value: Any, rows: _Rows, i: int) -> list[str]:
    """Label names from a list of strings, a JSON-list string or a comma-separated string."""
    value = split_label_list(value, lambda problem: _row_error(rows, i, problem))
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise _row_error(rows, i, f"expected label names, got {_got(value)}")
    tokens = [str(v).strip() for v in value]
    if any(not t for t in tokens):
        raise _row_error(rows, i, "empty label name")
    return tokens


def _resolve(token: str, index: dict[str, int], rows: _Rows, i: int) -> int:
    """A label name, or (when it is not one) a label id into the names."""
    if token in index:
        return index[token]
    if token.isdigit() and int(token) < len(index):
        return int(token)
    raise _row_error(rows, i, f"unknown label {token!r} (known: {_short(list(index))})")


def _row_error(rows: _Rows, i: int, problem: str) -> DataError:
    return DataError(f"row {i}: {problem}", path=rows.source, field=rows.column)


def _got(value: Any) -> str:
    text = repr(value)
    return "null" if value is None else (text if len(text) <= 60 else text[:57] + "...")


def _short(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"[{shown}] ({len(names)})"
