"""POST /feedback and GET /feedback/stats: corrections in, counts out (stored by app.feedback).

A correction is a picture, as sent to /predict or /read, with what it really shows: `digit` for
one digit, `text` for a number. It is read exactly as those routes read it (the same limits and
errors), and what is stored is each digit in MNIST form with its label, never the picture unless
S4_FEEDBACK_KEEP_ORIGINALS. Database calls run in worker threads, never on the event loop.

The database (app.feedback.store, through SQLAlchemy) is opened at start-up, its schema brought
up to date, unless `python -m app` did that before starting its workers: each of them then opens
it at the first call that needs it, so a worker that gets no correction never loads SQLAlchemy
(~15 MiB a worker, docs/decisions.md).
"""

import asyncio
import hashlib
import io
import logging
import os
import re
import tarfile
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.admin import bearer_token, check_bearer_token, require_admin_token
from app.api.dependencies import get_app_settings
from app.api.read import check_candidate_count, loaded_check
from app.api.schemas import error_responses
from app.feedback import SCHEMA_UP_TO_DATE_ENV
from app.numbers.reading import choose
from app.numbers.segmentation import MAX_GROUPS, segment_upload
from app.pipeline.batcher import check_ready
from app.pipeline.errors import PipelineError
from app.pipeline.prepare import PreparedImage, prepare_all
from app.pipeline.uploads import Upload, read_form
from app.settings import Settings

if TYPE_CHECKING:
    from app.feedback.store import FeedbackStore

LOG = logging.getLogger("s4.feedback")
FIELDS = frozenset({"digit", "text", "predicted", "source"})
SOURCE = re.compile(r"[ -~]{1,64}")  # printable ASCII, as short as a tag
RETENTION_EVERY_S = 3600.0
OPENING = threading.Lock()  # one worker thread opens the database; the others wait for it


def database_unavailable() -> HTTPException:
    return HTTPException(
        503, "the corrections database is unavailable; retry shortly", {"Retry-After": "5"}
    )


class InvalidCorrection(PipelineError):
    """The label (or another field) is missing or unusable; a 422 that says what to send."""


@dataclass(frozen=True)
class Label:
    text: str  # the right digits, left to right (one for `digit`)
    is_number: bool  # sent as `text` (a /read picture), not `digit`
    predicted: str | None  # what the client says the service answered, same shape
    source: str | None


def shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def parse_label(fields: dict[str, str]) -> Label:
    """The form's text fields -> a Label; InvalidCorrection says what is wrong with them."""
    digit, text = fields.get("digit"), fields.get("text")
    if digit is None and text is None:
        raise InvalidCorrection(
            "no label: send what the picture really shows, as form field `digit` (one digit, "
            "0-9) or, for a picture of a number, `text` (its digits, e.g. 2024)"
        )
    if digit is not None and text is not None:
        raise InvalidCorrection("send either `digit` (one digit) or `text` (a number), not both")
    value = (digit if text is None else text).strip()
    name = "digit" if text is None else "text"
    longest = 1 if text is None else MAX_GROUPS
    if not (value.isascii() and value.isdigit() and len(value) <= longest):
        what = "one digit, 0-9" if text is None else f"the number's digits 0-9 (at most {longest})"
        raise InvalidCorrection(f"form field `{name}` must be {what}, not {shown(value)}")
    predicted = fields.get("predicted")
    if predicted is not None:
        predicted = predicted.strip()
        if not (predicted.isascii() and predicted.isdigit() and len(predicted) <= longest):
            kind = "a digit" if text is None else "digits"
            raise InvalidCorrection(
                f"form field `predicted` must be what the service answered ({kind} 0-9), "
                f"not {shown(predicted)}"
            )
    source = fields.get("source")
    if source is not None and not SOURCE.fullmatch(source):
        raise InvalidCorrection(
            "form field `source` must be a short tag (1-64 printable ASCII characters), "
            f"not {shown(source)}"
        )
    return Label(value, text is not None, predicted, source)


@dataclass(frozen=True)
class DigitAsRead:
    pixels: np.ndarray  # uint8 [28, 28], MNIST form
    read_as: int


async def read_as_predict(
    request: Request, upload: Upload, _label: str
) -> tuple[list[DigitAsRead], str]:
    """The picture read as /predict reads it: ([its digit], the weights' SHA-256)."""
    state = request.app.state
    images: list[PreparedImage] = []

    def prepare() -> list[PreparedImage]:  # on the forward thread
        images.extend(prepare_all([upload], state.settings.max_pixels))
        return images

    result = await state.batcher.prepare_and_predict(1, prepare)
    read_as = int(result.probabilities[0].argmax())
    return [DigitAsRead(images[0].pixels, read_as)], result.weights_sha256


async def read_as_number(
    request: Request, upload: Upload, label: str
) -> tuple[list[DigitAsRead], str]:
    """The picture read as /read reads it: (its digits, left to right, the weights' SHA-256);
    InvalidCorrection when it finds another count of digits than ``label`` has."""
    state = request.app.state
    found = await run_in_threadpool(
        segment_upload, upload, state.settings.max_pixels, loaded_check(state)
    )
    check_candidate_count(len(found.candidates), state.settings.batch_queue_images)
    result = await state.batcher.predict(found.candidates)
    reading = choose(found, result.probabilities)
    if len(reading.digits) != len(label):
        raise InvalidCorrection(
            f"{upload.label}: the service finds {len(reading.digits)} digits in this picture "
            f"(it reads {reading.text or 'nothing'}), but `text` has {len(label)} ({label}), so "
            "it cannot tell which digit is which; send each digit alone with `digit`, or a "
            "picture whose digits stand apart"
        )
    digits = [DigitAsRead(found.candidates[d.candidate].pixels, d.digit) for d in reading.digits]
    return digits, result.weights_sha256


async def require_feedback_token(
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_token)],
) -> None:
    check_bearer_token(credentials, settings.feedback_token, "feedback", "S4_FEEDBACK_TOKEN")


def router_for(settings: Settings) -> APIRouter:
    """POST /feedback, which needs a bearer token (and says so in OpenAPI) only when
    S4_FEEDBACK_TOKEN is set, and GET /feedback/stats, public."""
    token = settings.feedback_token
    guard = [Depends(require_feedback_token)] if token and token.get_secret_value() else []
    routes = APIRouter()
    routes.include_router(router, dependencies=guard)
    routes.include_router(stats_router)
    return routes


class FeedbackResponse(BaseModel):
    ids: list[int] = Field(description="The stored record of each digit, left to right.")
    stored: int = Field(description="How many of them are new (a repeat is stored once).")
    label: str = Field(description="What the picture shows, as sent.")
    read: str = Field(description="What the served weights read in it now.")
    weights_sha256: str = Field(description="The served weights that read it.")


class WeightsAgreement(BaseModel):
    weights_sha256: str
    corrections: int
    agreed: int = Field(description="How many the served weights read as their label.")
    agreement_rate: float


class FeedbackStats(BaseModel):
    corrections: int = Field(description="Digits stored.")
    agreed: int = Field(description="How many the weights of the day read as their label.")
    agreement_rate: float | None
    by_weights: list[WeightsAgreement]
    confusion: list[list[int]] = Field(
        description="10x10 counts: row = the digit meant (the label), column = the digit read."
    )


FEEDBACK_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The picture."},
                    "digit": {
                        "type": "string",
                        "pattern": "^[0-9]$",
                        "description": "The right digit.",
                    },
                    "text": {
                        "type": "string",
                        "pattern": "^[0-9]{1,40}$",
                        "description": "The right number, for a picture sent to /read.",
                    },
                    "predicted": {"type": "string", "description": "What the service answered."},
                    "source": {"type": "string", "maxLength": 64, "description": "A client tag."},
                },
                "required": ["file"],
            }
        }
    },
}

router = APIRouter(tags=["feedback"])


@router.post(
    "/feedback",
    status_code=201,
    response_model=FeedbackResponse,
    summary="Tell the service what a picture really shows",
    responses=error_responses(
        s400="Malformed multipart body.",
        s401="S4_FEEDBACK_TOKEN is set and no bearer token was sent.",
        s403="Wrong feedback token.",
        s413="An upload over the byte limit, or too many pixels.",
        s415="Not multipart/form-data, or not an image.",
        s422="No label or an invalid one, no picture or several, a blank picture, or a number "
        "whose digits the service cannot match to `text`.",
        s503="Model not ready, overloaded, or the database unavailable (with Retry-After).",
    ),
    openapi_extra={"requestBody": FEEDBACK_BODY},
)
async def post_feedback(request: Request) -> Response:
    """One picture (`file`) with what it really shows: `digit` (0-9), or `text` (the number)
    for a picture of a number; optionally `predicted` (what the service answered) and `source`.

    The picture is read as /predict (or /read, for `text`) reads it, with the same limits and
    errors; each digit is stored in MNIST form with its label, the picture's SHA-256, the served
    weights and what they read now. The same picture and label again is stored once (the same
    ids come back). A number is stored only when the service finds as many digits as `text` has.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from app.feedback.store import NewCorrection

    state = request.app.state
    settings = state.settings
    check_ready(state.predictor)
    limits = (settings.max_images, settings.max_image_bytes)
    uploads, fields = await read_form(request, *limits, FIELDS)
    label = parse_label(fields)
    if len(uploads) != 1:
        raise InvalidCorrection(
            f"send one picture (one `file` part) per correction, not {len(uploads)}"
        )
    upload = uploads[0]
    read = read_as_number if label.is_number else read_as_predict
    digits, weights_sha256 = await read(request, upload, label.text)
    if label.predicted is not None and len(label.predicted) == len(label.text):
        predicted = [int(character) for character in label.predicted]
    else:
        predicted = [None] * len(digits)
    sha256 = hashlib.sha256(upload.data).hexdigest()
    original = upload.data if settings.feedback_keep_originals else None
    records = [
        NewCorrection(
            sha256=sha256,
            position=position,
            label=int(meant),
            read_as=digit.read_as,
            predicted=told,
            weights_sha256=weights_sha256,
            source=label.source,
            pixels=digit.pixels.astype(np.uint8).tobytes(),
            original=original,
        )
        for position, (digit, meant, told) in enumerate(
            zip(digits, label.text, predicted, strict=True)
        )
    ]
    try:
        stored = await run_in_threadpool(lambda: opened_store(state).add(records))
    except SQLAlchemyError as exc:
        LOG.error("feedback: the database refused a write: %s", type(exc).__name__)
        raise database_unavailable() from None
    state.metrics.record_feedback(
        [r.read_as == r.label for r, (_, new) in zip(records, stored, strict=True) if new]
    )
    answer = {
        "ids": [record_id for record_id, _ in stored],
        "stored": sum(new for _, new in stored),
        "label": label.text,
        "read": "".join(str(digit.read_as) for digit in digits),
        "weights_sha256": weights_sha256,
    }
    return Response(orjson.dumps(answer), status_code=201, media_type="application/json")


stats_router = APIRouter(tags=["feedback"])


@stats_router.get(
    "/feedback/stats", response_model=FeedbackStats, summary="What the corrections show"
)
async def feedback_stats(request: Request) -> FeedbackStats:
    """Counts only (no pictures): corrections stored, how often each served weights version
    read them as meant, and the confusion between the digit meant and the digit read."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return FeedbackStats(
            **await run_in_threadpool(lambda: opened_store(request.app.state).stats())
        )
    except SQLAlchemyError:
        raise database_unavailable() from None


# Mounted only when S4_ADMIN_TOKEN is set, as /admin/reload.
admin_router = APIRouter(
    prefix="/admin/feedback", tags=["admin"], dependencies=[Depends(require_admin_token)]
)


def idx_tar(store: "FeedbackStore") -> bytes:
    """Every stored digit as MNIST's IDX files, in one tar archive."""
    from app.feedback.idx import IMAGES_FILE, LABELS_FILE, idx_images, idx_labels

    digits = store.digits()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in ((IMAGES_FILE, idx_images(digits)), (LABELS_FILE, idx_labels(digits))):
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = len(data), int(time.time()), 0o644
            tar.addfile(member, io.BytesIO(data))
    return archive.getvalue()


@admin_router.get(
    "/export",
    summary="Every correction as MNIST IDX files (a tar archive)",
    response_class=Response,
    responses={
        200: {"content": {"application/x-tar": {}}, "description": "The two IDX files."},
        **error_responses(s401="No bearer token.", s403="Wrong token."),
    },
)
async def export_feedback(request: Request) -> Response:
    """feedback-images-idx3-ubyte and feedback-labels-idx1-ubyte, as `s4digits feedback export`
    writes them from the database directly; any MNIST reader takes them."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        data = await run_in_threadpool(lambda: idx_tar(opened_store(request.app.state)))
    except SQLAlchemyError:
        raise database_unavailable() from None
    disposition = 'attachment; filename="feedback-idx.tar"'
    return Response(
        data, media_type="application/x-tar", headers={"Content-Disposition": disposition}
    )


def opened_store(state) -> "FeedbackStore":
    """The app's store, opened (and its schema brought up to date) if it was not yet.

    Blocking: call it from a worker thread. SQLAlchemyError if the database cannot be reached."""
    with OPENING:
        if state.feedback_store is None:
            from app.feedback.store import FeedbackStore

            store = FeedbackStore(state.settings.database_url)
            store.upgrade()
            state.feedback_store = store
    return state.feedback_store


async def start(app: FastAPI, settings: Settings) -> None:
    """At start-up: open the database and bring its schema up to date (unless the schema is known
    to be, then at first use), and start retention."""
    app.state.feedback_store = None
    app.state.feedback_retention = None
    days = settings.feedback_retention_days
    if os.environ.get(SCHEMA_UP_TO_DATE_ENV) == "1" and days is None:
        return
    from app.feedback.store import display_url

    store = await run_in_threadpool(opened_store, app.state)
    LOG.info("feedback: corrections kept in %s", display_url(settings.database_url))
    if days is not None:
        app.state.feedback_retention = asyncio.create_task(apply_retention(store, days))


async def stop(app: FastAPI) -> None:
    if app.state.feedback_retention is not None:
        app.state.feedback_retention.cancel()
    if app.state.feedback_store is not None:
        app.state.feedback_store.close()


async def apply_retention(store: "FeedbackStore", days: int) -> None:
    """Delete corrections older than ``days`` now and every hour after."""
    from sqlalchemy.exc import SQLAlchemyError

    while True:
        try:
            deleted = await run_in_threadpool(store.delete_older_than, days)
            if deleted:
                LOG.info("feedback: deleted %d corrections older than %d days", deleted, days)
        except SQLAlchemyError as exc:
            LOG.error("feedback: retention failed: %s", type(exc).__name__)
        await asyncio.sleep(RETENTION_EVERY_S)
