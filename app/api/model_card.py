"""GET /model: the layer summary of the S4 net, what is known about the served weights, and the
card of the digit check /read uses."""

from functools import cache
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from app.api.dependencies import get_predictor
from app.api.schemas import DigitCheckInfo, Layer, ModelSummary, WeightsInfo, error_responses
from app.artifacts.architecture import INPUT_SHAPE, LayerRow, format_summary_table, layer_rows
from app.inference import Predictor
from app.numbers.check import DigitCheck

router = APIRouter(tags=["model"])


@cache
def _architecture() -> tuple[list[LayerRow], int]:
    """Rows and trainable-parameter count; they depend only on the architecture, so run once.

    From the architecture table, without torch: every parameter of the S4 net is trainable.
    """
    rows = layer_rows()
    return rows, sum(row.params for row in rows)


def _weights_info(predictor: Predictor) -> WeightsInfo:
    weights = predictor.weights
    if weights is None:
        return WeightsInfo(loaded=False, file=str(predictor.weights_path), error=predictor.error)
    return WeightsInfo(
        loaded=True,
        file=str(weights.path),
        sha256=weights.sha256,
        test_accuracy=weights.card.get("test_accuracy"),
        card=weights.card,
    )


@router.get(
    "/model",
    response_model=ModelSummary,
    summary="Layer summary and weights card",
    responses={
        200: {"content": {"text/plain": {}}, "description": "JSON, or the text table."},
        **error_responses(s422="An invalid `format`."),
    },
)
def model_summary(
    request: Request,
    predictor: Annotated[Predictor, Depends(get_predictor)],
    format: Annotated[
        Literal["json", "text"] | None,
        Query(description="`text` for the spec's table; default JSON (or by the Accept header)."),
    ] = None,
):
    """The 34 layers of the S4 net with output shapes and parameter counts, as in the spec.

    `?format=text` (or `Accept: text/plain`) returns the same summary as the spec's text table.
    """
    rows, trainable = _architecture()
    wants_text = format == "text" or (
        format is None and "text/plain" in request.headers.get("accept", "")
    )
    if wants_text:
        return PlainTextResponse(format_summary_table(rows, trainable))
    total = sum(row.params for row in rows)
    return ModelSummary(
        name="S4Net",
        input_shape=[-1, *INPUT_SHAPE],
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        layers=[Layer(**vars(row)) for row in rows],
        weights=_weights_info(predictor),
        digit_check=_check_info(request.app.state),
    )


def _check_info(state) -> DigitCheckInfo:
    check, path = state.digit_check, str(state.settings.digit_check)
    if not isinstance(check, DigitCheck):
        return DigitCheckInfo(loaded=False, file=path, error=str(check))
    parameters = sum(tensor.size for tensor in check.tensors.values())
    return DigitCheckInfo(
        loaded=True, file=path, sha256=check.sha256, parameters=parameters, card=check.card
    )
