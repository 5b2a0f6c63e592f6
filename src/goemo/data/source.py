"""Where a model's texts come from: one value (`DataSource`) and one resolver for every verb.

Training, evaluation, reports, ensembles and the int8 check all need "the dev split this model
was trained with" or "the test split of that data". Each used to work it out with its own
branches; now each asks `DataSource.split`. A source is one of three kinds:

* ``folder``: a GoEmotions folder (``train.tsv``, ``dev.tsv``, ``test.tsv``, ``emotions.txt``);
* ``files``: explicit split files (``.tsv``, ``.csv``, ``.jsonl``) read by goemo's own readers;
* ``dataset``: a Hugging Face dataset (a Hub id, a ``save_to_disk`` folder, parquet or arrow).

One reader per format: a local ``.csv`` / ``.jsonl`` / ``.json`` / ``.tsv`` named as a
``--dataset`` becomes a ``files`` source, and a local folder of such files named by split
(``train.csv``, ``validation.csv`` or ``dev.csv``, ``test.csv``) becomes one too, so every
CSV error names its file, line and field whichever option brought it in. The ``datasets``
library reads only what goemo has no reader for.

Training records the source in ``goemo.json`` (`to_record`) with absolute paths, so a later
verb finds the data from any working directory (`from_record`).

>>> DataSource.folder("data/goemotions").kind
'folder'
>>> DataSource.from_options(files={"train": "mine.csv", "dev": "dev.csv"}).files
{'train': 'mine.csv', 'dev': 'dev.csv'}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from goemo.core.errors import ConfigError, DataError
from goemo.core.folder import ModelFolder
from goemo.data.hf_datasets import describe, goemo_split_name, load_hf_dataset
from goemo.data.io import OFFICIAL_SPLITS, load_goemotions, load_split, read_label_names
from goemo.data.split import Split
from goemo.data.taxonomy import OWN_LABELS, load_taxonomy, project_split

DEFAULT_DATA_DIR = "data/goemotions"
Kind = Literal["folder", "files", "dataset"]
GOEMO_READERS = (".tsv", ".csv", ".jsonl", ".json")
# File names a local folder of split files may use, per goemo split.
SPLIT_FILE_STEMS = {"train": ("train",), "dev": ("dev", "validation", "valid"), "test": ("test",)}


@dataclass(frozen=True)
class DataSource:
    """Where the splits come from, how their columns are named, and the taxonomy they are read in."""

    kind: Kind
    data_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # goemo split name -> file
    dataset: str | None = None
    dataset_config: str | None = None
    labels_file: str | None = None
    text_column: str = "text"
    label_column: str | None = None
    taxonomy: str = "goemotions"

    # ------------------------------------------------------------------ building one

    @classmethod
    def folder(cls, data_dir: str | Path, taxonomy: str = "goemotions") -> DataSource:
        """A GoEmotions folder."""
        return cls("folder", data_dir=str(data_dir), taxonomy=taxonomy)

    @classmethod
    def from_options(
        cls,
        *,
        data_dir: str | Path | None = None,
        files: Mapping[str, str | Path | None] | None = None,
        dataset: str | Path | None = None,
        dataset_config: str | None = None,
        labels_file: str | Path | None = None,
        text_column: str | None = None,
        label_column: str | None = None,
        taxonomy: str | None = None,
    ) -> DataSource:
        """The source the command-line options name; at most one of ``dataset``, ``files``, ``data_dir``.

        This is the one place that turns options into a source, so that a local CSV named by
        ``--dataset`` and one named by ``--train`` are read by the same reader.
        """
        given_files = {k: str(v) for k, v in (files or {}).items() if v}
        named = [n for n, v in (("--dataset", dataset), ("--train/--dev/--test", given_files)) if v]
        if len(named) > 1 or (named and data_dir is not None):
            both = named + (["--data-dir"] if data_dir is not None else [])
            raise ConfigError(f"give {' or '.join(both)}, not both")
        common: dict[str, Any] = {
            "labels_file": str(labels_file) if labels_file else None,
            "text_column": text_column or "text",
            "label_column": label_column,
            "taxonomy": taxonomy or "goemotions",
        }
        if dataset:
            local = _local_files(Path(str(dataset)).expanduser())
            if local is not None:
                if dataset_config:
                    raise ConfigError(f"--dataset-config {dataset_config!r}: {dataset} is local files, not a dataset")
                return cls("files", files=local, **common)
            return cls("dataset", dataset=str(dataset), dataset_config=dataset_config, **common)
        if given_files:
            return cls("files", files=given_files, **common)
        return cls("folder", data_dir=str(data_dir or DEFAULT_DATA_DIR), **common)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DataSource:
        """The source a training config (a `TrainConfig`'s ``to_dict``, or goemo.json's copy) names."""
        dataset = config.get("dataset")
        data_dir = None if dataset or config.get("train_file") else config.get("data_dir")
        return cls.from_options(
            data_dir=data_dir,
            files={"train": config.get("train_file"), "dev": config.get("dev_file"), "test": config.get("test_file")},
            dataset=dataset,
            dataset_config=config.get("dataset_config"),
            labels_file=config.get("labels_file"),
            text_column=config.get("text_column"),
            label_column=config.get("label_column"),
            taxonomy=config.get("taxonomy"),
        )

    # ------------------------------------------------------------------ goemo.json

    def to_record(self) -> dict[str, Any]:
        """A JSON object for ``goemo.json``, local paths made absolute (valid from any working directory)."""
        record = dataclasses.asdict(self)
        record["data_dir"] = _absolute(self.data_dir)
        record["files"] = {k: _absolute(v) for k, v in self.files.items()}
        record["labels_file"] = _absolute(self.labels_file)
        if self.kind == "dataset" and Path(str(self.dataset)).expanduser().exists():
            record["dataset"] = _absolute(self.dataset)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DataSource:
        """What `to_record` wrote; unknown keys are ignored (a newer goemo's record)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        if values.get("kind") not in ("folder", "files", "dataset"):
            raise ConfigError(f"data_source record: kind {values.get('kind')!r} is not folder, files or dataset")
        values["files"] = dict(values.get("files") or {})
        return cls(**values)

    # ------------------------------------------------------------------ reading

    def describe(self) -> str:
        """One line for logs and model cards: the folder, the files or the dataset."""
        if self.kind == "dataset":
            return f"dataset {describe(str(self.dataset), self.dataset_config)}"
        if self.kind == "files":
            return ", ".join(f"{k} {v}" for k, v in self.files.items())
        return str(self.data_dir)

    @property
    def is_hub_dataset(self) -> bool:
        """A dataset that is not a local folder or file (its card links the Hub)."""
        return self.kind == "dataset" and not Path(str(self.dataset)).expanduser().exists()

    def with_taxonomy(self, taxonomy: str) -> DataSource:
        """The source read in ``taxonomy``; a model of labels of its own reads it as recorded."""
        return self if taxonomy == OWN_LABELS else dataclasses.replace(self, taxonomy=taxonomy)

    def model_taxonomy(self, label_names: Sequence[str]) -> str:
        """What a model trained on this source records: `taxonomy` when its labels are that
        taxonomy's, else `OWN_LABELS`. A model of one's own labels is not GoEmotions: no paper
        table is set beside it and nothing projects it onto Ekman or sentiment groups. The labels
        are compared with the taxonomy as goemo ships it: a data folder's own ``emotions.txt``
        names the labels of that folder, not GoEmotions'.

        >>> DataSource.folder("no/such/folder").model_taxonomy(["billing", "delivery"])
        'own'
        >>> DataSource.folder("no/such/folder", "ekman").model_taxonomy(load_taxonomy("ekman").labels)
        'ekman'
        """
        try:
            labels = load_taxonomy(self.taxonomy).labels
        except ConfigError:  # a grouping file that is gone: the labels say nothing about it
            return OWN_LABELS
        return self.taxonomy if tuple(label_names) == labels else OWN_LABELS

    def splits(self, names: Sequence[str] | None = None, label_names: Sequence[str] | None = None) -> dict[str, Split]:
        """The splits ``names`` (default: every split the source has), keyed by goemo's names.

        ``label_names`` name the labels of files and datasets whose labels carry no names
        (a model's own, when scoring it); `labels_file` wins when the source records one.
        """
        if names is not None and self.kind == "folder":
            unknown = [n for n in names if n not in OFFICIAL_SPLITS]
            if unknown:
                raise ConfigError(
                    f"split must be one of {', '.join(OFFICIAL_SPLITS)} or a data file; {unknown[0]!r} is neither"
                )
        names = [goemo_split_name(n) for n in names] if names is not None else None
        given = read_label_names(self.labels_file) if self.labels_file else label_names
        if self.kind == "folder":
            folder = Path(str(self.data_dir))
            if not folder.is_dir():
                raise DataError(f"data folder not found: {folder} (fetch it with `goemo download --dest {folder}`)")
            return load_goemotions(folder, taxonomy=self.taxonomy, splits=names or OFFICIAL_SPLITS)
        if self.kind == "dataset":
            return load_hf_dataset(
                str(self.dataset),
                self.dataset_config,
                splits=names,
                text_column=self.text_column,
                label_column=self.label_column,
                label_names=given if self.taxonomy == "goemotions" else None,  # a grouping's names are not the data's
                taxonomy=self.taxonomy,
            )
        out: dict[str, Split] = {}
        for key in names or list(self.files):
            if key not in self.files:
                raise ConfigError(f"no {key} split: the data source has {', '.join(self.files) or 'no files'}")
            out[key] = self._read_file(key, given)
            given = given or out[key].label_names  # every file in the names of the first
        return out

    def split(self, name: str, label_names: Sequence[str] | None = None) -> Split:
        """One split by goemo's name (``dev`` is a dataset's ``validation``)."""
        return self.splits([name], label_names)[goemo_split_name(name)]

    def _read_file(self, key: str, label_names: Sequence[str] | None) -> Split:
        path = Path(self.files[key])
        tsv = path.suffix.lower() == ".tsv"
        tax = load_taxonomy(self.taxonomy)
        names = label_names if tax.groups is None else None  # the file is read in its own labels first
        if tsv:  # fixed columns
            split = load_split(path, label_names=names)
        else:
            split = load_split(path, label_names=names, text_column=self.text_column, label_column=self.label_column)
        split = dataclasses.replace(split, name=key)
        if list(split.label_names) == list(tax.labels):  # already in the grouping
            return split
        return project_split(split, tax)


def model_source(folder: ModelFolder) -> DataSource:
    """The data ``folder``'s model was trained on: ``goemo.json``'s ``data_source`` record.

    Folders from before the record existed rebuild it from their training config (its
    relative paths then count from the working directory, as they did).
    """
    record = folder.meta.get("data_source")
    if isinstance(record, dict):
        return DataSource.from_record(record)
    return DataSource.from_config(folder.training_config)


def resolve_source(
    folder: ModelFolder | None, split: str | Path, given: DataSource | None = None
) -> tuple[DataSource, str]:
    """The one resolver every verb that scores a model goes through: (source, split name) for ``split``.

    ``given`` (the verb's --data-dir / --dataset options) wins; else the data the model was
    trained on (`model_source`), else `DEFAULT_DATA_DIR` when that folder is gone. The split
    is read in the model's own taxonomy (evaluation projects from there). ``split`` may also
    be a data file, read with the source's columns (`source_for_split`).

    >>> resolve_source(None, "dev", DataSource.folder("data/goemotions"))[1]
    'dev'
    """
    source = given
    if source is None and folder is not None:
        source = model_source(folder)
        if source.kind == "folder" and not Path(str(source.data_dir)).is_dir():
            source = DataSource.folder(DEFAULT_DATA_DIR)
    source = source or DataSource.folder(DEFAULT_DATA_DIR)
    if folder is not None:
        source = source.with_taxonomy(folder.taxonomy)
    return source_for_split(split, source)


def read_split(folder: ModelFolder | None, split: str | Path, given: DataSource | None = None) -> Split:
    """`resolve_source`, then the split itself, labels named as the model's when the data has no names."""
    source, name = resolve_source(folder, split, given)
    return source.split(name, folder.label_names if folder is not None else None)


def source_for_split(split: str | Path, source: DataSource) -> tuple[DataSource, str]:
    """(source, split name) for a verb's ``--split`` value: a split name of ``source``, or a data file.

    A file keeps ``source``'s columns and taxonomy, so ``--split mine.csv`` is read like the
    model's own data.

    >>> src, name = source_for_split("test", DataSource.folder("data/goemotions"))
    >>> name
    'test'
    """
    text = str(split)
    if Path(text).suffix.lower() in GOEMO_READERS and Path(text).is_file():
        key = goemo_split_name(Path(text).stem)
        return dataclasses.replace(source, kind="files", files={key: text}, data_dir=None, dataset=None), key
    if Path(text).suffix.lower() in GOEMO_READERS:
        raise ConfigError(f"split {text!r}: no such file")
    return source, text


def _local_files(path: Path) -> dict[str, str] | None:
    """The split files of a local file or folder goemo reads itself, or None (``datasets`` reads it)."""
    if path.is_file() and path.suffix.lower() in GOEMO_READERS:
        return {"train": str(path)}
    if not path.is_dir():
        return None
    found: dict[str, str] = {}
    for key, stems in SPLIT_FILE_STEMS.items():
        for stem in stems:
            hits = [p for p in (path / f"{stem}{suffix}" for suffix in GOEMO_READERS) if p.is_file()]
            if hits:
                found[key] = str(hits[0])
                break
    return found or None


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None
