"""Tampered model folders: every one ends in one clear line (exit 1), never a traceback or a half-run.

A table of damaged copies of a trained tiny run (each file of the folder edited the way a
bad copy, a hand edit or a hostile upload would), each opened through `EmotionClassifier.load`,
``goemo predict --output`` and ``goemo evaluate``: the error names the file and the field, and
``--output`` leaves nothing behind. ONNX exports are checked the same way (marked slow: one
export takes seconds).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from goemo.cli import app
from goemo.core.errors import GoemoError
from goemo.predict.classifier import EmotionClassifier

Tamper = Callable[[Path], None]
LONG_TEXT = " ".join(["word"] * 700)  # longer than any position limit here, so a bad length would crash


def edit_json(name: str, change: Callable[[dict], None]) -> Tamper:
    def tamper(folder: Path) -> None:
        path = folder / name
        doc = json.loads(path.read_text(encoding="utf-8"))
        change(doc)
        path.write_text(json.dumps(doc), encoding="utf-8")

    return tamper


def write(name: str, content: str | bytes) -> Tamper:
    def tamper(folder: Path) -> None:
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return tamper


def truncate(name: str, fraction: float = 0.5) -> Tamper:
    def tamper(folder: Path) -> None:
        path = folder / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return tamper


def grow(name: str, size: int) -> Tamper:
    """The file made ``size`` bytes long without writing them (a sparse file: no disk, no time)."""

    def tamper(folder: Path) -> None:
        with open(folder / name, "r+b") as f:
            f.truncate(size)

    return tamper


def remove(name: str) -> Tamper:
    return lambda folder: (folder / name).unlink()


def both(*tampers: Tamper) -> Tamper:
    def tamper(folder: Path) -> None:
        for t in tampers:
            t(folder)

    return tamper


def _drop_last_label_from_config(doc: dict) -> None:
    last = str(len(doc["id2label"]) - 1)
    doc["label2id"].pop(doc["id2label"].pop(last))


def _drop_last_label_from_meta(doc: dict) -> None:
    doc["thresholds"]["per_label"].pop(doc["label_names"].pop())


def _set(key: str, value: object) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        *parents, last = key.split(".")
        for p in parents:
            doc = doc[p]
        doc[last] = value

    return change


def _remove_id(doc: dict) -> None:
    doc["id2label"].pop("5")


# (case id, tamper, what the one line must say: the file, the field, the problem)
TORCH_CASES: list[tuple[str, Tamper, list[str]]] = [
    ("goemo.json is a list", write("goemo.json", "[1, 2]"), ["goemo.json: expected a JSON object, got list"]),
    ("goemo.json truncated", truncate("goemo.json"), ["goemo.json:", "invalid JSON"]),
    ("goemo.json not UTF-8", write("goemo.json", b'{"taxonomy": "\xff"}'), ["goemo.json: cannot read"]),
    (
        "string global threshold",
        edit_json("goemo.json", _set("thresholds.global", "0.3")),
        ["goemo.json: thresholds.global: expected a number in [0, 1], got '0.3'"],
    ),
    (
        "string per-label threshold",
        edit_json("goemo.json", _set("thresholds.per_label.joy", "0.5")),
        ["goemo.json: thresholds.per_label.joy: expected a number in [0, 1], got '0.5'"],
    ),
    (
        "thresholds a list",
        edit_json("goemo.json", _set("thresholds", [0.3])),
        ["goemo.json: thresholds: expected an object"],
    ),
    (
        "threshold out of range",
        edit_json("goemo.json", _set("thresholds.per_label.anger", 7)),
        ["goemo.json: thresholds.per_label.anger"],
    ),
    (
        "huge max_length",
        edit_json("goemo.json", _set("max_length", 10**9)),
        ["goemo.json: max_length: 1000000000 is more than the 512 tokens", "max_position_embeddings 512"],
    ),
    (
        "string max_length",
        edit_json("goemo.json", _set("max_length", "128")),
        ["goemo.json: max_length: expected an integer >= 2, got '128'"],
    ),
    ("label_names a string", edit_json("goemo.json", _set("label_names", "joy")), ["goemo.json: label_names"]),
    (
        "label_names reordered",
        edit_json("goemo.json", lambda d: d["label_names"].reverse()),
        ["goemo.json label_names disagree with config.json id2label"],
    ),
    ("config.json is a list", write("config.json", "[]"), ["config.json: expected a JSON object, got list"]),
    ("config.json truncated", truncate("config.json"), ["config.json:", "invalid JSON"]),
    ("id2label with a gap", edit_json("config.json", _remove_id), ["config.json: id2label: missing id"]),
    (
        "fewer labels than the weights",
        both(
            edit_json("config.json", _drop_last_label_from_config), edit_json("goemo.json", _drop_last_label_from_meta)
        ),
        ["model.safetensors: classifier.weight: shape [28, 32]", "config.json id2label: 27 labels"],
    ),
    (
        "hidden size unlike the weights",
        edit_json("config.json", _set("hidden_size", 64)),
        ["model.safetensors: bert.embeddings.word_embeddings.weight", "config.json hidden_size 64"],
    ),
    (
        "vocabulary size unlike the weights",
        edit_json("config.json", _set("vocab_size", 100)),
        ["model.safetensors: bert.embeddings.word_embeddings.weight", "config.json vocab_size 100"],
    ),
    (
        "more layers than the weights",  # transformers would fill the missing ones with random numbers
        edit_json("config.json", _set("num_hidden_layers", 4)),
        ["the weights hold 2 encoder layers but config.json num_hidden_layers is 4"],
    ),
    (
        "fewer positions than max_length",
        edit_json("config.json", _set("max_position_embeddings", 16)),
        ["goemo.json: max_length: 48 is more than the 16 tokens", "config.json max_position_embeddings 16"],
    ),
    (
        "unknown model type",
        edit_json("config.json", _set("model_type", "nonsense")),
        ["cannot load model from folder", "nonsense"],
    ),
    ("safetensors truncated", truncate("model.safetensors"), ["model.safetensors: truncated: its header promises"]),
    ("safetensors empty", write("model.safetensors", b""), ["model.safetensors: truncated: 0 bytes"]),
    (
        "safetensors garbage",
        write("model.safetensors", b"\x00garbage" * 100),
        ["model.safetensors: truncated or not a safetensors file"],
    ),
    (
        "config.json of 20 MB",  # read whole, a 300 MB one took 1.9 GB of memory
        grow("config.json", 20 * 2**20),
        ["config.json: 20,971,520 bytes, more than the 16,777,216 a config.json may have; not read"],
    ),
    ("tokenizer.json truncated", truncate("tokenizer.json"), ["tokenizer.json:", "invalid JSON"]),
    ("tokenizer.json missing", remove("tokenizer.json"), ["no tokenizer vocabulary"]),
    (
        "tokenizer_config.json is a list",
        write("tokenizer_config.json", "[]"),
        ["tokenizer_config.json: expected a JSON object, got list"],
    ),
    (
        "tokenizer limit below max_length",
        edit_json("tokenizer_config.json", _set("model_max_length", 16)),
        ["goemo.json: max_length: 48 is more than the 16 tokens the tokenizer takes", "tokenizer_config.json"],
    ),
]


@pytest.fixture(scope="module")
def mean_head_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """goemo's mean-pooling head (its encoder config nested in config.json) with the run's goemo.json."""
    from goemo.models.modeling import build_tiny_model, load_tokenizer, save_model

    meta = json.loads((tiny_model_dir / "goemo.json").read_text())
    folder = tmp_path_factory.mktemp("mean-head") / "best"
    save_model(build_tiny_model(meta["label_names"], "mean").eval(), load_tokenizer("minilm"), folder, meta)
    return folder


MEAN_CASES: list[tuple[str, Tamper, list[str]]] = [
    (
        "mean head: max_length past its encoder's positions",
        edit_json("goemo.json", _set("max_length", 600)),
        ["goemo.json: max_length: 600 is more than the 512 tokens", "config.json encoder.max_position_embeddings 512"],
    ),
    (
        "mean head: fewer positions than max_length",
        edit_json("config.json", _set("encoder.max_position_embeddings", 16)),
        ["goemo.json: max_length: 48 is more than the 16 tokens"],
    ),
    (
        "mean head: encoder hidden size unlike the weights",
        edit_json("config.json", _set("encoder.hidden_size", 48)),
        ["model.safetensors: classifier.weight: shape [28, 32]", "config.json encoder.hidden_size 48"],
    ),
]


def damaged_copy(source: Path, tmp_path: Path, tamper: Tamper) -> Path:
    """A copy of the model folder alone (no run folder around it, so no cached predictions)."""
    folder = tmp_path / "model"
    # without the CPU export an earlier test may have made in the source (its "making it again" is another line)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".onnx-cpu"))
    tamper(folder)
    return folder


def assert_one_line(result, expected: list[str]) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("goemo: error: "), result.stderr
    for part in expected:
        assert part in lines[0], (part, lines[0])


def check_everywhere(folder: Path, expected: list[str], tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(GoemoError) as info:
        EmotionClassifier.load(folder, device="cpu", backend="auto")
    for part in expected:
        assert part in str(info.value)

    out = tmp_path / "out" / "labels.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(folder), "--output", str(out), LONG_TEXT])
    assert_one_line(result, expected)
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no output, no temp file

    result = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(folder), "--data-dir", str(shared_data), "--split", "test", "--max-samples", "20"],
    )
    assert_one_line(result, expected)


@pytest.mark.parametrize(("case", "tamper", "expected"), TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_tampered_folder(
    case: str, tamper: Tamper, expected: list[str], tiny_model_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    check_everywhere(damaged_copy(tiny_model_dir, tmp_path, tamper), expected, tmp_path, shared_data)


@pytest.mark.parametrize(("case", "tamper", "expected"), MEAN_CASES, ids=[c[0] for c in MEAN_CASES])
def test_tampered_mean_head_folder(
    case: str, tamper: Tamper, expected: list[str], mean_head_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    check_everywhere(damaged_copy(mean_head_dir, tmp_path, tamper), expected, tmp_path, shared_data)


def test_the_untampered_copies_work(tiny_model_dir: Path, mean_head_dir: Path, tmp_path: Path) -> None:
    """The table's failures come from the tampering, not from copying the folder."""
    for source in (tiny_model_dir, mean_head_dir):
        folder = damaged_copy(source, tmp_path / source.parent.name, lambda _: None)
        result = CliRunner().invoke(app, ["predict", "--model", str(folder), LONG_TEXT])
        assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- ONNX exports


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime", reason="ONNX tests need the onnx extra: pip install 'goemo[onnx]'")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (the onnx extra)")
    from goemo.export import export_onnx

    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("onnx") / "export").path


ONNX_CASES: list[tuple[str, Tamper, list[str]]] = [
    ("onnx: model.onnx truncated", truncate("model.onnx"), ["cannot load ONNX model", "model.onnx"]),
    (
        "onnx: fewer labels than the graph",
        both(
            edit_json("config.json", _drop_last_label_from_config), edit_json("goemo.json", _drop_last_label_from_meta)
        ),
        ["model.onnx: logits: the graph gives 28 scores per text but the folder names 27 labels"],
    ),
    (
        "onnx: huge max_length",
        edit_json("goemo.json", _set("max_length", 10**9)),
        ["goemo.json: max_length: 1000000000 is more than the 512 tokens"],
    ),
    ("onnx: string threshold", edit_json("goemo.json", _set("thresholds.global", "x")), ["thresholds.global"]),
    ("onnx: tokenizer.json unusable", write("tokenizer.json", '{"model": 5}'), ["cannot load the tokenizer"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "tamper", "expected"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_tampered_onnx_folder(
    case: str, tamper: Tamper, expected: list[str], onnx_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    check_everywhere(damaged_copy(onnx_dir, tmp_path, tamper), expected, tmp_path, shared_data)


@pytest.mark.slow
def test_onnx_max_length_beyond_the_positions_is_refused_at_load(onnx_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "long.txt"
    src.write_text(LONG_TEXT + "\nshort\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(onnx_dir), "--input", str(src), "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-length", "1000"])
    assert_one_line(result, ["max_length=1000: the model takes at most 512 tokens", "max_position_embeddings 512"])
    assert list(tmp_path.iterdir()) == [src]
    result = CliRunner().invoke(app, [*args, "--max-length", "512"])  # the limit itself works
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2


def test_cpu_export_record_is_read_and_checked(tmp_path: Path) -> None:
    from goemo.core.errors import ModelError
    from goemo.core.folder import ModelFolder, write_meta

    folder = tmp_path / "export"
    folder.mkdir()
    assert ModelFolder.open(folder).cpu_export == {}
    write_meta(folder, {"cpu_export": {"source_fingerprint": "ab", "precision": "int8"}})
    assert ModelFolder.open(folder).cpu_export["precision"] == "int8"
    write_meta(folder, {"cpu_export": ["not", "an", "object"]})
    with pytest.raises(ModelError, match="cpu_export: expected an object"):
        _ = ModelFolder.open(folder).cpu_export


@pytest.mark.parametrize("name", ["goemo.json", "config.json", "tokenizer_config.json", "tokenizer.json"])
def test_oversized_json_files_are_refused_unread(name: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """A 300 MB JSON file (sparse: nothing is written) is one line naming it, not gigabytes of memory."""
    from goemo.core.errors import ModelError
    from goemo.core.folder import MAX_JSON_BYTES, MAX_TOKENIZER_JSON_BYTES, ModelFolder

    folder = damaged_copy(tiny_model_dir, tmp_path, grow(name, 300 * 2**20))
    limit = MAX_TOKENIZER_JSON_BYTES if name == "tokenizer.json" else MAX_JSON_BYTES
    with pytest.raises(ModelError) as info:
        opened = ModelFolder.open(folder)
        _ = opened.config
        opened.check_tokenizer()
    assert str(info.value) == (
        f"{folder / name}: 314,572,800 bytes, more than the {limit:,} a {name} may have; not read (a damaged or wrong file?)"
    )
