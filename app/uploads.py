"""Reading the images out of a /predict request body, with the limits enforced while it streams.

Two ways in: multipart/form-data (one ``file`` part per image; ``files`` works too) or the raw
image bytes as the body. Sizes are counted chunk by chunk as the body arrives, so an oversized
upload is refused as soon as it crosses the limit; neither Content-Length (which may lie or be
absent) nor the whole body is trusted first. Starlette's form parser is not used because it
spools file parts of any size to disk before the handler can see them.
"""

from dataclasses import dataclass

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

IMAGE_FIELDS = {"file", "files"}
# Bodies that are the image itself. curl --data-binary sends form-urlencoded unless told otherwise,
# so that is read as image bytes too; whether they really are an image is decided by decoding.
RAW_BODY_TYPES = {"application/octet-stream", "application/x-www-form-urlencoded"}
# Room for a part's boundary and headers (python-multipart allows 8 headers of 4224 bytes).
PART_OVERHEAD_BYTES = 40_000

SEND_IMAGES_HINT = (
    "send multipart/form-data with one `file` field per image, or the raw image bytes with "
    "Content-Type image/png (or another image/* type)"
)


@dataclass(frozen=True)
class Upload:
    index: int  # position in the request; answers come back in this order
    filename: str | None
    data: bytes

    @property
    def label(self) -> str:
        """How error messages name this image, e.g. ``image 2 (seven.png)``."""
        return f"image {self.index}" + (f" ({self.filename})" if self.filename else "")


async def read_uploads(request: Request, max_images: int, max_image_bytes: int) -> list[Upload]:
    """All images in the request, in order; raises HTTPException (4xx) with what to fix."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    media_type = content_type.decode("latin-1")
    if media_type == "multipart/form-data":
        uploads = await _read_multipart(request, params, max_images, max_image_bytes)
    elif media_type.startswith("image/") or media_type in RAW_BODY_TYPES or not media_type:
        body = await _read_raw_body(request, max_image_bytes)
        uploads = [Upload(0, None, body)] if body else []
    else:
        raise HTTPException(415, f"Content-Type {media_type} is not accepted: {SEND_IMAGES_HINT}")
    if not uploads:
        raise HTTPException(422, f"the request holds no image: {SEND_IMAGES_HINT}")
    return uploads


def _too_large(label: str, max_image_bytes: int) -> HTTPException:
    return HTTPException(
        413,
        f"{label} is larger than the {max_image_bytes:,}-byte limit (S4_MAX_IMAGE_BYTES); "
        "send a smaller or more compressed image",
    )


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def _read_raw_body(request: Request, max_image_bytes: int) -> bytes:
    declared = _declared_length(request)
    if declared is not None and declared > max_image_bytes:
        raise _too_large("image 0", max_image_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_image_bytes:
            raise _too_large("image 0", max_image_bytes)
    return bytes(body)


class _ImagePartCollector:
    """python-multipart callbacks that keep image parts and stop at the first broken limit."""

    def __init__(self, max_images: int, max_image_bytes: int):
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.uploads: list[Upload] = []
        self.finished = False
        self._headers: dict[str, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._filename: str | None = None
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    @property
    def _label(self) -> str:
        return Upload(len(self.uploads), self._filename, b"").label

    def on_part_begin(self) -> None:
        self._headers, self._filename, self._data = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        if field not in IMAGE_FIELDS:
            raise HTTPException(
                422, f"unexpected form field {field!r}: put each image in a `file` field"
            )
        self._filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
        if len(self.uploads) >= self.max_images:
            raise HTTPException(
                413,
                f"more than {self.max_images} images in one request (S4_MAX_IMAGES); "
                "split them over several requests",
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if len(self._data) > self.max_image_bytes:
            raise _too_large(self._label, self.max_image_bytes)

    def on_part_end(self) -> None:
        self.uploads.append(Upload(len(self.uploads), self._filename, bytes(self._data)))

    def on_end(self) -> None:
        self.finished = True


async def _read_multipart(
    request: Request, params: dict[bytes, bytes], max_images: int, max_image_bytes: int
) -> list[Upload]:
    max_body_bytes = max_images * (max_image_bytes + PART_OVERHEAD_BYTES)
    declared = _declared_length(request)
    if declared is not None and declared > max_body_bytes:
        raise HTTPException(
            413,
            f"the request body ({declared:,} bytes) is larger than {max_images} images of "
            f"{max_image_bytes:,} bytes (S4_MAX_IMAGES, S4_MAX_IMAGE_BYTES); send fewer or "
            "smaller images",
        )
    if b"boundary" not in params:
        raise HTTPException(400, "multipart/form-data without a boundary parameter")
    collector = _ImagePartCollector(max_images, max_image_bytes)
    received = 0
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body_bytes:
                raise HTTPException(
                    413, f"the request body is larger than {max_body_bytes:,} bytes"
                )
            parser.write(chunk)
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart/form-data body: {exc}") from None
    if not collector.finished:
        raise HTTPException(400, "the multipart/form-data body ends before its closing boundary")
    return collector.uploads
