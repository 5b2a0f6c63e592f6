"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), in-process.

Every operation of ``/openapi.json`` gets valid and invalid requests generated from the
schema; each answer must not be a server error, a valid request must be accepted and an
invalid one refused, and the status code, content type, headers and body must be the ones
the schema documents. Against the torch backend and an int8 ONNX
export of the tiny model; a bounded number of examples keeps it to seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from goemo.serve.app import create_app  # noqa: E402
from goemo.serve.limits import ServeLimits  # noqa: E402

CHECKS = [
    not_a_server_error,
    positive_data_acceptance,  # what the schema allows is accepted (its limits are the real ones) ...
    negative_data_rejection,  # ... and what it forbids is refused
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Small limits, so that generated bodies reach them; "testserver" is the Host the in-process client sends.
LIMITS = ServeLimits(max_texts=8, max_chars=300, max_wait_ms=0.0, allowed_hosts=("testserver",))
# /explain reads each text once per word: texts short enough that any body the schema allows stays
# under --max-tokens (2 texts x 42 tokens x 41 variants at most), so every valid body must be answered.
EXPLAIN_LIMITS = ServeLimits(max_texts=2, max_chars=40, max_wait_ms=0.0, allowed_hosts=("testserver",))


@pytest.fixture(scope="module", params=["torch", "onnx"])
def classifier(request, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from goemo.predict.classifier import EmotionClassifier

    if request.param == "torch":
        return EmotionClassifier.load(tiny_model_dir, backend="torch", device="cpu")
    pytest.importorskip("onnxruntime")
    from goemo.export import export_onnx

    out = export_onnx(tiny_model_dir, tmp_path_factory.mktemp("fuzz-onnx") / "tiny-int8", quantize="int8").path
    return EmotionClassifier.load(out, backend="onnx", device="cpu")


@pytest.fixture(scope="module")
def api_schema(classifier):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(classifier, LIMITS))


@pytest.fixture(scope="module")
def explain_schema(classifier):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(classifier, EXPLAIN_LIMITS))


def test_the_schema_lists_every_operation(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == {(method, path) for method, path, _ in OPERATIONS} | {("POST", "/explain")}


# (method, path, generation modes): a GET without parameters has nothing to make invalid.
OPERATIONS = [
    ("POST", "/predict", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]),
    ("GET", "/labels", [GenerationMode.POSITIVE]),
    ("GET", "/health", [GenerationMode.POSITIVE]),
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), [(m, p, mode) for m, p, modes in OPERATIONS for mode in modes], ids=str
)
def test_the_api_keeps_the_promises_of_its_schema(api_schema, method, path, mode):
    """Schemathesis' strategies for one operation, run with Hypothesis; every answer checked."""
    fuzz(api_schema[path][method], mode)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_explain_keeps_the_promises_of_its_schema(explain_schema, mode):
    """/explain: any label of the schema's enum and any text it allows is explained; the rest is refused."""
    fuzz(explain_schema["/explain"]["POST"], mode)


def fuzz(operation, mode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,  # the same examples on every run: a failure here is reproducible
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def check(case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()
