"""Read: the request body -> one Upload per image (multipart `file` parts, or the raw body).

Sizes are counted as the body streams in, so an oversized upload is refused as soon as it
crosses the limit. Refusals are UploadRejected and its subclasses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.pipeline.errors import MalformedBody, UnsupportedMediaType, UploadRejected, UploadTooLarge


@dataclass(frozen=True)
class Upload:
    index: int  # position in the request; answers come back in this order
    filename: str | None
    data: bytes

    @property
    def label(self) -> str:
        """How error messages name this image, e.g. ``image 2 (seven.png)``."""
        return f"image {self.index}" + (f" ({self.filename})" if self.filename else "")


IMAGE_FIELDS = {"file", "files"}
# Bodies that are the image itself. curl --data-binary sends form-urlencoded unless told otherwise,
# so that is read as image bytes too; whether they really are an image is decided by decoding.
RAW_BODY_TYPES = {"application/octet-stream", "application/x-www-form-urlencoded"}
# Room for a part's boundary and headers (python-multipart allows 8 headers of 4224 bytes).
PART_OVERHEAD_BYTES = 40_000
# Multipart bodies up to this size (by their Content-Length) are read whole (split_whole_body).
WHOLE_BODY_BYTES = 65_536
# A header line split_whole_body takes: an RFC 7230 token (python-multipart's header-name
# characters), a colon, spaces (which python-multipart skips too), then a value without a CR.
SIMPLE_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): *([^\r]*)")
# Fewer and shorter than python-multipart's limits (8 headers per part, 4,224 bytes per line).
SIMPLE_HEADERS_PER_PART = 8
SIMPLE_HEADER_BYTES = 4096
# Most bytes of one text form field (POST /feedback's label and tags): far more than any needs.
TEXT_FIELD_BYTES = 1024

# One part of a multipart body: its (name, value) header lines, and its data.
Part = tuple[list[tuple[bytes, bytes]], bytes]

SEND_IMAGES_HINT = (
    "send multipart/form-data with one `file` field per image, or the raw image bytes with "
    "Content-Type image/png (or another image/* type)"
)


async def read_uploads(request: Request, max_images: int, max_image_bytes: int) -> list[Upload]:
    """Every image in the request body, in order, with the limits enforced as it streams in.

    Sizes are counted chunk by chunk, so an oversized upload is refused as soon as it crosses the
    limit; Content-Length is only trusted to refuse early. Raises UploadRejected (and kin).
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    media_type = content_type.decode("latin-1")
    if media_type == "multipart/form-data":
        collector = ImagePartCollector(max_images, max_image_bytes)
        await _read_multipart(request, params, collector)
        uploads = collector.uploads
    elif media_type.startswith("image/") or media_type in RAW_BODY_TYPES or not media_type:
        too_large = partial(_too_large, "image 0", max_image_bytes)
        body = await read_body(request, max_image_bytes, too_large)
        uploads = [Upload(0, None, body)] if body else []
    else:
        raise UnsupportedMediaType(f"Content-Type {media_type} is not accepted: {SEND_IMAGES_HINT}")
    if not uploads:
        raise UploadRejected(f"the request holds no image: {SEND_IMAGES_HINT}")
    return uploads


async def read_form(
    request: Request, max_images: int, max_image_bytes: int, text_fields: frozenset[str]
) -> tuple[list[Upload], dict[str, str]]:
    """A multipart/form-data body's images (`file` parts, limits as read_uploads') and its text
    fields named in ``text_fields`` (each at most TEXT_FIELD_BYTES of UTF-8, once); any other
    field or Content-Type is refused (UploadRejected and kin)."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type {content_type.decode('latin-1') or '(none)'} is not accepted: send "
            "multipart/form-data with the picture in a `file` field"
        )
    collector = ImagePartCollector(max_images, max_image_bytes, text_fields)
    await _read_multipart(request, params, collector)
    return collector.uploads, collector.fields


def _too_large(label: str, max_image_bytes: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"{label} is larger than the {max_image_bytes:,}-byte limit (S4_MAX_IMAGE_BYTES); "
        "send a smaller or more compressed image"
    )


def split_whole_body(body: bytes, boundary: bytes) -> list[Part] | None:
    """The parts of a whole multipart body laid out as HTTP clients write it, else None.

    That layout: ``--BOUNDARY`` CRLF, parts separated by CRLF ``--BOUNDARY`` CRLF, and CRLF
    ``--BOUNDARY--`` CRLF at the very end; each part one to eight simple header lines, a blank
    line, then its data, with the boundary nowhere inside. python-multipart reads such a body as
    exactly these parts (tests/test_uploads.py holds the two to that on generated bodies).
    Anything else (a preamble or epilogue, padding after a boundary, a part without headers, the
    boundary inside data, an odd header line) is None: python-multipart's to parse, or to refuse.
    """
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if len(pieces) < 3 or pieces[0] or pieces[-1] != b"--\r\n":
        return None
    parts = []
    for piece in pieces[1:-1]:
        if not piece.startswith(b"\r\n"):
            return None
        head, blank_line, data = piece[2:].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not blank_line or len(lines) > SIMPLE_HEADERS_PER_PART:
            return None
        headers = []
        for line in lines:
            header = SIMPLE_HEADER.fullmatch(line)
            if header is None or len(line) > SIMPLE_HEADER_BYTES:
                return None
            headers.append(header.groups())
        parts.append((headers, data))
    return parts


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def read_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The whole body, refused with ``too_large()`` as soon as it is known to exceed ``limit``
    bytes: by its Content-Length, else as it streams in."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return bytes(body)


class ImagePartCollector:
    """python-multipart callbacks that keep image parts and stop at the first broken limit."""

    def __init__(
        self, max_images: int, max_image_bytes: int, text_fields: frozenset[str] = frozenset()
    ):
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.text_fields = text_fields
        self.uploads: list[Upload] = []
        self.fields: dict[str, str] = {}
        self._text_field: str | None = None  # the part being read is this text field
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

    def on_part_begin(self) -> None:
        self._headers, self._filename, self._data = {}, None, bytearray()
        self._text_field = None

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
        if field in self.text_fields:
            if field in self.fields:
                raise UploadRejected(f"form field {field!r} appears twice; send it once")
            self._text_field = field
            return
        if field not in IMAGE_FIELDS:
            others = "".join(f", `{name}`" for name in sorted(self.text_fields))
            where = "put each image in a `file` field"
            if others:
                where = f"the fields are `file` (the picture){others}"
            raise UploadRejected(f"unexpected form field {field!r}: {where}")
        self._filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
        if len(self.uploads) >= self.max_images:
            raise UploadTooLarge(
                f"more than {self.max_images} images in one request (S4_MAX_IMAGES); "
                "split them over several requests"
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if self._text_field is not None:
            if len(self._data) > TEXT_FIELD_BYTES:
                raise UploadRejected(
                    f"form field {self._text_field!r} is longer than {TEXT_FIELD_BYTES} bytes"
                )
        elif len(self._data) > self.max_image_bytes:
            label = Upload(len(self.uploads), self._filename, b"").label
            raise _too_large(label, self.max_image_bytes)

    def on_part_end(self) -> None:
        if self._text_field is not None:
            try:
                self.fields[self._text_field] = self._data.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadRejected(f"form field {self._text_field!r} is not UTF-8 text") from None
            return
        self.uploads.append(Upload(len(self.uploads), self._filename, bytes(self._data)))

    def on_end(self) -> None:
        self.finished = True

    def collect(self, parts: list[Part]) -> None:
        """For ``parts`` (split_whole_body's), the calls python-multipart makes as it parses."""
        for headers, data in parts:
            self.on_part_begin()
            for name, value in headers:
                self.on_header_field(name, 0, len(name))
                self.on_header_value(value, 0, len(value))
                self.on_header_end()
            self.on_headers_finished()
            self.on_part_data(data, 0, len(data))
            self.on_part_end()
        self.on_end()


async def _read_multipart(
    request: Request, params: dict[bytes, bytes], collector: ImagePartCollector
) -> None:
    """Feed the body to ``collector``, with the limits it was made with."""
    max_images, max_image_bytes = collector.max_images, collector.max_image_bytes
    text_bytes = len(collector.text_fields) * (TEXT_FIELD_BYTES + PART_OVERHEAD_BYTES)
    max_body_bytes = max_images * (max_image_bytes + PART_OVERHEAD_BYTES) + text_bytes
    declared = _declared_length(request)
    if declared is not None and declared > max_body_bytes:
        raise UploadTooLarge(
            f"the request body ({declared:,} bytes) is larger than {max_images} images of "
            f"{max_image_bytes:,} bytes (S4_MAX_IMAGES, S4_MAX_IMAGE_BYTES); send fewer or "
            "smaller images"
        )
    if b"boundary" not in params:
        raise MalformedBody("multipart/form-data without a boundary parameter")
    boundary = params[b"boundary"]
    try:
        if declared is not None and declared <= WHOLE_BODY_BYTES:
            body = await request.body()
            parts = split_whole_body(body, boundary)
            if parts is None:
                MultipartParser(boundary, collector.callbacks()).write(body)
            else:
                collector.collect(parts)
        else:
            parser = MultipartParser(boundary, collector.callbacks())
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body_bytes:
                    raise UploadTooLarge(
                        f"the request body is larger than {max_body_bytes:,} bytes"
                    )
                parser.write(chunk)
    except FormParserError as exc:
        raise MalformedBody(f"malformed multipart/form-data body: {exc}") from None
    if not collector.finished:
        raise MalformedBody("the multipart/form-data body ends before its closing boundary")
