"""The request and response bodies of the REST API, with the limits in the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints, create_model

from goemo.serve.limits import ServeLimits


def _whole_number(value: Any) -> Any:
    """``3.0`` -> ``3``: JSON does not tell them apart (JSON Schema calls both an integer); a bool or string stays."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Strict: ``true`` or ``"3"`` is refused, as the schema's "integer" says, not read as 1 or 3. The bounds sit
# inside, before the validator that takes ``3.0``, so that the schema states them (``minimum``, ``maximum``).
TopK = Annotated[int, Strict(), Field(ge=1), BeforeValidator(_whole_number)]
# A number, strict: an integer is one too; a bool or a string ("0.5") is not.
Probability = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]


class PredictRequest(BaseModel):
    """Body of ``POST /predict``; unknown keys are refused so that a typo ("text") is not ignored.

    `create_app` serves a copy of it whose ``texts`` and ``top_k`` carry the app's limits, so
    that the OpenAPI schema states them.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["Thank you so much!", "Why would you do that?"], "top_k": 3}]},
    )

    texts: list[str] = Field(description="Texts to classify, in order.")
    top_k: TopK | None = Field(None, description="Return the k most probable labels instead of those above threshold.")
    threshold: Probability | None = Field(
        None, description="One threshold for every label instead of the model's tuned ones."
    )
    taxonomy: Literal["goemotions", "ekman", "sentiment"] | None = Field(
        None, description="Name the emotions by group: a group's score is its members' highest probability."
    )


_LABELS_DESCRIPTION = (
    "Labels to explain for every text (default: each text's predicted labels, else its most probable one)."
)


class ExplainRequest(BaseModel):
    """Body of ``POST /explain``: the texts, and optionally which labels to explain; unknown keys are refused.

    `create_app` serves a copy whose ``texts`` carry the app's limits, as for ``/predict``.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["Thank you so much!"], "labels": ["gratitude", "joy"]}]},
    )

    texts: list[str] = Field(description="Texts to explain, in order.")
    labels: list[str] | None = Field(None, min_length=1, description=_LABELS_DESCRIPTION)


def _texts_field(limits: ServeLimits, what: str, tokens: str) -> Any:
    """The ``texts`` field of a request model: its item and character limits, and ``tokens``, how tokens are limited."""
    text = Annotated[str, StringConstraints(max_length=limits.max_chars)]
    return (
        list[text],
        Field(
            min_length=1,
            max_length=limits.max_texts,
            description=f"Texts to {what}, in order: 1 to {limits.max_texts}, "
            f"each at most {limits.max_chars} characters of valid Unicode, {tokens}",
        ),
    )


def explain_request_model(limits: ServeLimits, label_names: Sequence[str]) -> type[ExplainRequest]:
    """`ExplainRequest` with this server's limits (the same as ``/predict``'s) and label names in its schema.

    The names are the schema's ``enum``, so a client (or a fuzzer) reads which labels exist; the
    app checks them itself, so that an unknown one is refused in one line naming it.
    """
    num_labels = len(label_names)
    name = Annotated[str, Field(json_schema_extra={"enum": list(label_names)})]
    return create_model(
        "ExplainRequest",
        __base__=ExplainRequest,
        texts=_texts_field(
            limits,
            "explain",
            f"each text's tokens times its words + 1 at most {limits.max_tokens} all together (the model "
            "reads each text whole and without each of its words).",
        ),
        labels=(
            list[name] | None,
            Field(None, min_length=1, max_length=num_labels, description=_LABELS_DESCRIPTION),
        ),
    )


def request_model(limits: ServeLimits, num_labels: int) -> type[PredictRequest]:
    """`PredictRequest` with this server's limits in its schema: what is validated is what is documented."""
    return create_model(
        "PredictRequest",
        __base__=PredictRequest,
        texts=_texts_field(
            limits,
            "classify",
            f"all together at most {limits.max_tokens} tokens. A text longer than the model reads at once is "
            "scored in pieces (sentences, else token windows), each label's score its highest in any piece.",
        ),
        top_k=(
            Annotated[int, Strict(), Field(ge=1, le=num_labels), BeforeValidator(_whole_number)] | None,
            Field(
                None,
                description="Return the k most probable labels instead of those above threshold "
                "(at most the number of labels; with a taxonomy, a k above its number of groups gives them all).",
            ),
        ),
    )


class LabelScore(BaseModel):
    label: str
    score: float


class TextResult(BaseModel):
    labels: list[LabelScore] = Field(description="Selected labels, most probable first.")
    scores: dict[str, float] = Field(description="Probability of every label (or group), in label order.")


class PredictResponse(BaseModel):
    results: list[TextResult]


class WordAttributionModel(BaseModel):
    word: str = Field(description="The word as written: text[start:end].")
    start: int
    end: int
    attribution: float = Field(
        description="Signed: how much deleting the word lowers the label's probability (negative: raises it)."
    )


class LabelExplanationModel(BaseModel):
    label: str
    score: float = Field(description="The label's probability on the whole text.")
    method: str = Field(description="How the attributions were made: occlusion (delete each word, rescore).")
    words: list[WordAttributionModel] = Field(description="Every word of the text, in order.")


class ExplanationModel(BaseModel):
    text: str
    labels: list[LabelExplanationModel] = Field(description="One per explained label, highest score first.")


class ExplainResponse(BaseModel):
    results: list[ExplanationModel]


class LabelsResponse(BaseModel):
    labels: list[str]
    thresholds: dict[str, float]


class HealthResponse(BaseModel):
    status: str
    model: str | None = Field(description="The model folder's name (never its path).")
    labels: int
    backend: str | None
    device: str | None
    precision: str | None
    threads: int | None = Field(description="CPU threads of the model, when known.")
    long_text: str | None = Field(None, description="What happens to a text longer than the model reads at once.")
    long_texts: dict[str, int] | None = Field(
        None, description="Texts over the model's max length so far, the pieces they were cut into, texts truncated."
    )
    workers: int = Field(1, description="Server processes sharing the port (goemo serve --workers).")
    pid: int = Field(description="This worker's process id (with several workers, which one answered).")
    uptime_s: float
    limits: dict[str, Any]
    batching: dict[str, int | float]
    connections: dict[str, int | float] | None = Field(
        None, description="Open connections and refusals, when served by goemo's uvicorn set-up."
    )


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str | None


class Error(BaseModel):
    """Every error: one line to show as it is (and, for a body that did not validate, each problem)."""

    detail: str
    errors: list[FieldError] | None = Field(None, description="Each problem, for a body that did not validate.")


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "Host header not allowed, Content-Length not a number or beside Transfer-Encoding, "
        "or a body the JSON parser cannot read.",
        408: "The request body did not arrive within the body timeout (--body-timeout).",
        413: "The body is larger than --max-body-bytes.",
        422: "The body is not the expected JSON, or a text or option is over a limit; `detail` names it.",
        503: "Server busy (the queue or the connection cap is full): retry after `Retry-After` seconds.",
    }
    out: dict[int | str, dict[str, Any]] = {code: {"model": Error, "description": what[code]} for code in codes}
    if 503 in out:
        out[503]["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    return out
