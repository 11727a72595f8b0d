"""The Open Inference Protocol over gRPC: KServe's ``inference.GRPCInferenceService``.

The same model, limits and micro-batcher as the REST routes (app/api/v2.py), on its own port
(S4_GRPC_PORT), served by grpcio's asyncio server on the app's event loop and started and stopped
by the app's lifespan. Every worker listens on the same port (SO_REUSEPORT), as they share the
HTTP one. Errors map to gRPC status codes: a bad request INVALID_ARGUMENT, an unknown model or
version NOT_FOUND, a model not ready (or no answer in S4_REQUEST_TIMEOUT_S) UNAVAILABLE, a full
queue or a message over the size limit RESOURCE_EXHAUSTED; the details say what to fix.
"""

import asyncio
import time
from collections.abc import Callable

import grpc
import orjson
from starlette.datastructures import State

from app.api.v2 import max_body_bytes, read_digits
from app.metrics import REQUEST_LOG
from app.pipeline.batcher import check_ready
from app.pipeline.errors import ImageRejected, ModelNotReady, Overloaded, PipelineError
from app.protocols.kserve import grpc_predict_v2_pb2 as pb
from app.protocols.kserve.grpc_predict_v2_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)
from app.protocols.open_inference import (
    IMAGE_BYTES,
    ProtocolError,
    check_model,
    digits,
    model_metadata,
    model_version,
    server_metadata,
)
from app.protocols.open_inference_grpc import (
    encode_infer_response,
    model_metadata_response,
    parse_infer_request,
    server_metadata_response,
)

SERVICE = "inference.GRPCInferenceService"
PROTOCOL_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
PIPELINE_CODES: dict[type[PipelineError], grpc.StatusCode] = {
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class Refused(Exception):
    """Answer the call with this status code and details."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code


def refused(exc: ProtocolError | PipelineError) -> Refused:
    if isinstance(exc, ProtocolError):
        code = PROTOCOL_CODES.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
        return Refused(code, str(exc))
    code = PIPELINE_CODES.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT)
    return Refused(code, f"{IMAGE_BYTES}: {exc}" if isinstance(exc, ImageRejected) else str(exc))


def observed(method: Callable) -> Callable:
    """Time the call, record it in the metrics and the request log, and turn Refused (and the
    protocol's and pipeline's errors) into the call's status."""
    name = method.__name__
    path = f"/{SERVICE}/{name}"

    async def handler(self: "InferenceServicer", request, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            try:
                return await method(self, request, context)
            except (ProtocolError, PipelineError) as exc:
                raise refused(exc) from None
        except Refused as exc:
            code = exc.code
            await context.abort(exc.code, str(exc))
        except BaseException:  # a bug, or the call cancelled: gRPC answers it itself
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            seconds = time.perf_counter() - started
            self.state.metrics.record_grpc(name, code.name, seconds)
            REQUEST_LOG.info(
                orjson.dumps(
                    {
                        "event": "request",
                        "method": "GRPC",
                        "path": path,
                        "status": code.name,
                        "duration_ms": round(seconds * 1000.0, 3),
                        "client": context.peer(),
                    }
                ).decode()
            )

    handler.__name__ = name
    return handler


class InferenceServicer(GRPCInferenceServiceServicer):
    """The six calls of the protocol; RepositoryModelLoad/Unload stay UNIMPLEMENTED."""

    def __init__(self, state: State):
        self.state = state  # the app's: predictor, batcher, settings, metrics

    def named_versions(self, model_name: str, version: str) -> list[str]:
        """As REST's: all served versions without ``version``; NOT_FOUND for another model or
        a version not served."""
        return check_model(model_name, version or None, self.state.versions.versions())

    @observed
    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @observed
    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.predictor.ready)

    @observed
    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        served = self.named_versions(request.name, "")  # NOT_FOUND for another model
        # A version not served is not ready (REST answers it 4xx), rather than an error.
        ready = request.version in served if request.version else bool(served)
        return pb.ModelReadyResponse(ready=ready)

    @observed
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context
    ) -> pb.ServerMetadataResponse:
        return server_metadata_response(server_metadata())

    @observed
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context
    ) -> pb.ModelMetadataResponse:
        versions = self.named_versions(request.name, request.version)
        platform = self.state.predictor.runtime_name or "none"
        return model_metadata_response(model_metadata(versions, platform))

    @observed
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        state = self.state
        settings = state.settings
        check_model(request.model_name, None, [])
        # The version asked for, else the primary or (for its share) the canary, chosen by the
        # call's x-request-id metadata, else its request id, else at random.
        metadata = dict(context.invocation_metadata() or ())
        request_id = metadata.get("x-request-id") or request.id or None
        served = state.versions.route(request.model_version, request_id)
        check_ready(served.predictor)
        infer_request = parse_infer_request(request, settings.max_images, settings.max_image_bytes)
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                result = await read_digits(infer_request, served.batcher, settings.max_pixels)
        except TimeoutError:
            raise Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"no answer within {settings.request_timeout_s:g} s (S4_REQUEST_TIMEOUT_S): "
                "the service is busy; retry shortly",
            ) from None
        version = model_version(result.weights_sha256)
        answered = digits(result.probabilities).tolist()
        state.metrics.record_predictions(answered)
        state.metrics.record_version(version, "grpc", time.perf_counter() - started, answered)
        return encode_infer_response(infer_request, result.probabilities, version)


async def start(state: State) -> grpc.aio.Server:
    """Listen on S4_HOST:S4_GRPC_PORT (SO_REUSEPORT: every worker on the one port) and serve.

    RuntimeError, naming the setting, if the port cannot be had."""
    settings = state.settings
    # Room for the largest request the limits allow (raw bytes, no base64): past it, gRPC
    # itself answers RESOURCE_EXHAUSTED before reading the rest.
    limit = max_body_bytes(settings.max_images, settings.max_image_bytes)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC cannot listen on {address} (S4_GRPC_PORT): {exc}") from None
    await server.start()
    return server


async def stop(server: grpc.aio.Server, grace_s: float) -> None:
    """Refuse new calls, let those in flight finish for up to ``grace_s``, then cancel them."""
    await server.stop(grace_s)
