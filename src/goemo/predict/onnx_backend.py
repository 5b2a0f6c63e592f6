"""The ONNX Runtime backend: logits of a ``model.onnx`` written by ``goemo export``, without torch."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerFast

from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import ONNX_FILE, ModelFolder
from goemo.core.run_settings import RunSettings

try:
    import onnxruntime as ort
except ImportError:  # the `onnx` extra; reported when an ONNX folder is opened
    ort = None


def physical_cores() -> int:
    """CPU cores this process may run on, hyper-threads of one core counted once: ONNX Runtime's own
    default, set explicitly so that `OnnxBackend.num_threads` (``/health``) is what the session uses."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:  # not Linux, or sysfs hidden (some containers): count logical CPUs
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


class OnnxBackend:
    """An ONNX Runtime session over ``model.onnx`` (inputs input_ids, attention_mask; output logits)."""

    name = "onnx"
    takes_tokens = True

    def __init__(self, path: Path, device: str, num_threads: int | None, precision: str) -> None:
        if ort is None:
            raise ModelError("the onnx backend needs onnxruntime: pip install 'goemo[onnx]'")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = num_threads or physical_cores()
        # int8 runs each text alone (`__call__`): one core per text, texts side by side on the cores
        per_text = precision == "int8" and not device.startswith("cuda")
        options.intra_op_num_threads = 1 if per_text else threads
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
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if "logits" not in outputs:
            raise ModelError(f"{path}: ONNX model has no output 'logits'; export it with `goemo export`")
        last = outputs["logits"][-1] if outputs["logits"] else None
        # Scores per text when the graph fixes it (it does for `goemo export`), else None.
        self.num_outputs: int | None = last if isinstance(last, int) else None
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        self.precision = precision
        self._threads = threads
        # ONNX Runtime's Run is thread-safe and lets go of the GIL: texts run alone, in parallel
        self._per_text = per_text
        self._pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process it was made in, the pool)

    @property
    def num_threads(self) -> int:
        """The cores one model call runs on (intra-op threads, or int8's texts side by side)."""
        return self._threads

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits of a batch. An int8 graph runs each text alone, on its own tokens.

        Dynamic int8 quantisation takes each activation's scale from the whole input tensor, so in
        a batch a text's scores would move with its neighbours and padding (up to 0.125 on the `make
        run` model): one request would change another's answer. Alone, a text gets one answer in
        every batch; a batch's texts run side by side, one core each (docs/benchmarks.md).
        """
        if not self._per_text:
            return self._run(input_ids, attention_mask)

        def alone(row: int) -> np.ndarray:
            keep = attention_mask[row].astype(bool)  # its own tokens: padding on either side dropped
            return self._run(input_ids[row][keep][None, :], attention_mask[row][keep][None, :])[0]

        return np.stack(list(self._threads_pool().map(alone, range(len(input_ids)))))

    def _threads_pool(self) -> ThreadPoolExecutor:
        """The pool of this process: a forked child does not inherit the parent's threads."""
        if self._pool is None or self._pool[0] != os.getpid():
            self._pool = (os.getpid(), ThreadPoolExecutor(self._threads, thread_name_prefix="goemo-int8"))
        return self._pool[1]

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return np.asarray(self.session.run(["logits"], feeds)[0], dtype=np.float32)


def load_onnx_backend(folder: ModelFolder, settings: RunSettings) -> tuple[OnnxBackend, Any]:
    """The ONNX backend and tokenizer of an export folder; ``device="auto"`` is CUDA when onnxruntime-gpu has it."""
    device, precision, num_threads = settings.device, settings.precision or "auto", settings.num_threads
    if precision not in ("auto", "fp32"):
        raise ConfigError(
            f"precision={precision!r} applies to the torch backend; an ONNX graph runs in the precision "
            f"it was exported with (goemo export --quantize int8 for a smaller, faster one)"
        )
    if device == "auto":
        available = ort.get_available_providers() if ort is not None else []
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    elif device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device={device!r}: the onnx backend runs on cpu or cuda")
    backend = OnnxBackend(folder.path / ONNX_FILE, device, num_threads, folder.onnx_quantize or "fp32")
    width = backend.num_outputs
    if width is not None and width != folder.num_labels:
        raise ModelError(
            f"{folder.path / ONNX_FILE}: logits: the graph gives {width} scores per text but the folder names "
            f"{folder.num_labels} labels (config.json id2label); the export and its config.json disagree"
        )
    folder.check_tokenizer()
    try:
        # The fast tokenizer class itself, not AutoTokenizer, which imports torch when it is installed.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder.path))
    except Exception as e:  # tokenizers raises a bare Exception for a tokenizer.json it cannot use
        raise ModelError(f"cannot load the tokenizer of {folder.path}: {' '.join(str(e).split())}") from None
    folder.check_vocabulary(len(tokenizer))
    return backend, tokenizer
