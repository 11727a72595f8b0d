"""app.protocols.open_inference: the Open Inference Protocol's parsing and encoding, no HTTP."""

import base64
import gzip
import json
import struct
import zlib

import numpy as np
import orjson
import pytest

from app.protocols.open_inference import ProtocolError
from app.protocols.open_inference_rest import (
    HEADER_LENGTH,
    decode_content,
    encode_infer_response,
    parse_infer_request,
)

MAX_IMAGES, MAX_IMAGE_BYTES = 64, 1_000_000


def parse(request: dict, binary: bytes = b""):
    header = json.dumps(request).encode()
    length = str(len(header)) if binary else None
    return parse_infer_request(header + binary, length, MAX_IMAGES, MAX_IMAGE_BYTES)


def images_input(pixels: np.ndarray, **fields) -> dict:
    tensor = {"name": "images", "datatype": "UINT8", "shape": list(pixels.shape)}
    return {"inputs": [{**tensor, **fields}]}


def rejected(request: dict, binary: bytes = b"") -> str:
    with pytest.raises(ProtocolError) as caught:
        parse(request, binary)
    assert caught.value.status_code == 400
    return str(caught.value)


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)


def test_images_as_flat_json_nested_json_and_binary_are_the_same_tensor(pixels):
    flat = parse(images_input(pixels, data=pixels.ravel().tolist()))
    nested = parse(images_input(pixels, data=pixels.tolist()))
    binary = parse(
        images_input(pixels, parameters={"binary_data_size": pixels.size}), pixels.tobytes()
    )
    for request in (flat, nested, binary):
        np.testing.assert_array_equal(request.images, pixels)
        assert request.encoded is None and request.count == 3


def test_image_bytes_as_binary_elements_utf8_strings_and_base64():
    files = [b"\x89PNG first", b"", b"third file"]
    binary = b"".join(struct.pack("<I", len(f)) + f for f in files)
    tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [3]}
    as_binary = parse(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": len(binary)}}]}, binary
    )
    assert as_binary.encoded == files
    b64 = [base64.b64encode(f).decode() for f in files]
    as_b64 = parse({"inputs": [{**tensor, "parameters": {"content_type": "base64"}, "data": b64}]})
    assert as_b64.encoded == files
    as_text = parse({"inputs": [{**tensor, "data": ["a", "é", ""]}]})
    assert as_text.encoded == [b"a", "é".encode(), b""]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datatype": "FP32"}, "must be UINT8"),
        ({"shape": [3, 28, 27]}, "must be [-1, 28, 28]"),
        ({"shape": [3, 784]}, "must be [-1, 28, 28]"),
        ({"shape": [0, 28, 28], "data": []}, "holds no image"),
        ({"shape": [65, 28, 28]}, "more than 64 (S4_MAX_IMAGES)"),
        ({"shape": [True, 28, 28]}, "must be [-1, 28, 28]"),
        ({"name": "pixels"}, "unknown input 'pixels'"),
        ({"data": [1] * 100}, "lists nested to its shape"),
        ({"data": [256] * 2352}, "from 0 to 255"),
        ({"data": [-1] * 2352}, "from 0 to 255"),
        ({"data": [0.5] * 2352}, "from 0 to 255"),
        ({"data": [True] * 2352}, "from 0 to 255"),
        ({"data": ["1"] * 2352}, "from 0 to 255"),
        ({"data": [2**63] * 2352}, "from 0 to 255"),
        ({"data": [[[0] * 28] * 28] * 2}, "lists nested to its shape"),
        ({"data": None}, "lists nested to its shape"),
    ],
)
def test_bad_images_inputs_say_what_to_fix(pixels, change, message):
    request = images_input(pixels, data=pixels.ravel().tolist())
    request["inputs"][0].update(change)
    assert message in rejected(request)


@pytest.mark.parametrize(
    ("request_json", "binary", "message"),
    [
        ({"inputs": []}, b"", "exactly one input"),
        ({"inputs": "images"}, b"", "exactly one input"),
        ([1, 2], b"", "JSON object"),
        ({"inputs": [{"name": "images"}], "id": 7}, b"", "`id` must be a string"),
        ({"inputs": [{"name": "images"}], "parameters": []}, b"", "`parameters` of the request"),
        (
            {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [1]}]},
            b"",
            "must be strings",
        ),
        (
            {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                         "parameters": {"content_type": "base64"}, "data": ["%%"]}]},
            b"",
            "not valid base64",
        ),
        (
            {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                         "parameters": {"binary_data_size": 9}}]},
            struct.pack("<I", 5) + b"abcde",
            "ends before element 1",
        ),
        (
            {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                         "parameters": {"binary_data_size": 9}}]},
            struct.pack("<I", 50) + b"abcde",
            "claims 50 bytes",
        ),
        (
            {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                         "parameters": {"binary_data_size": 11}}]},
            struct.pack("<I", 5) + b"abcdefg",
            "2 bytes after its 1 elements",
        ),
    ],
)  # fmt: skip
def test_bad_requests_say_what_to_fix(request_json, binary, message):
    assert message in rejected(request_json, binary)


def test_binary_data_must_match_its_declared_size_and_shape(pixels):
    sized = images_input(pixels, parameters={"binary_data_size": pixels.size})
    assert "holds 2,351 bytes" in rejected(sized, pixels.tobytes()[:-1])
    short = images_input(pixels[:2], parameters={"binary_data_size": pixels.size})
    assert "is 1,568 bytes of UINT8" in rejected(short, pixels.tobytes())
    both = images_input(pixels, parameters={"binary_data_size": pixels.size}, data=[0])
    assert "both `data` and `binary_data_size`" in rejected(both, pixels.tobytes())
    undeclared = images_input(pixels, data=pixels.ravel().tolist())
    assert "gives no `binary_data_size`" in rejected(undeclared, b"extra")


@pytest.mark.parametrize("length", ["-1", "abc", "999999", "1.5"])
def test_a_bad_header_length_is_refused(pixels, length):
    body = orjson.dumps(images_input(pixels, data=pixels.ravel().tolist()))
    with pytest.raises(ProtocolError, match=HEADER_LENGTH):
        parse_infer_request(body, length, MAX_IMAGES, MAX_IMAGE_BYTES)


def test_files_over_the_byte_limit_are_refused_before_decoding():
    tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["x" * 11]}
    with pytest.raises(ProtocolError, match="more than the 10-byte limit"):
        parse_infer_request(orjson.dumps({"inputs": [tensor]}), None, MAX_IMAGES, 10)


def test_outputs_are_selected_and_encoded_as_json_or_binary(pixels):
    probabilities = np.random.default_rng(1).random((3, 10)).astype(np.float32)
    every = parse(images_input(pixels, data=pixels.ravel().tolist()), b"")
    answer = encode_infer_response(every, probabilities, "abc")
    assert answer.media_type == "application/json" and not answer.headers
    body = orjson.loads(answer.body)
    assert body["model_name"] == "s4net" and body["model_version"] == "abc" and "id" not in body
    (probs, digit) = body["outputs"]
    assert probs["shape"] == [3, 10] and probs["datatype"] == "FP32"
    np.testing.assert_array_equal(np.array(probs["data"], np.float32), probabilities.ravel())
    assert digit == {
        "name": "digit", "datatype": "INT64", "shape": [3],
        "data": probabilities.argmax(axis=1).tolist(),
    }  # fmt: skip

    request = images_input(pixels, data=pixels.ravel().tolist())
    request.update(id="r1", outputs=[{"name": "digit", "parameters": {"binary_data": True}}])
    answer = encode_infer_response(parse(request), probabilities, "abc")
    split = int(answer.headers[HEADER_LENGTH])
    header = orjson.loads(answer.body[:split])
    assert header["id"] == "r1" and [o["name"] for o in header["outputs"]] == ["digit"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    np.testing.assert_array_equal(
        np.frombuffer(answer.body[split:], "<i8"), probabilities.argmax(axis=1)
    )


def test_binary_data_output_is_the_default_for_every_output(pixels):
    request = images_input(pixels, data=pixels.ravel().tolist())
    request["parameters"] = {"binary_data_output": True}
    outputs = parse(request).outputs
    assert [(o.name, o.binary) for o in outputs] == [("probabilities", True), ("digit", True)]
    request["outputs"] = [{"name": "digit", "parameters": {"binary_data": False}}]
    assert [(o.name, o.binary) for o in parse(request).outputs] == [("digit", False)]


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([{"name": "logits"}], "unknown output 'logits'"),
        ([{"name": "digit"}, {"name": "digit"}], "requested twice"),
        ([], "non-empty list"),
        ([{"name": "digit", "parameters": {"classification": 3}}], "classification"),
        ([{"name": "digit", "parameters": {"binary_data": "yes"}}], "true or false"),
    ],
)
def test_bad_output_requests(pixels, outputs, message):
    request = images_input(pixels, data=pixels.ravel().tolist())
    request["outputs"] = outputs
    assert message in rejected(request)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_inflated_within_the_limit(encoding):
    body = b'{"inputs": []}' * 100
    compressed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    assert decode_content(compressed, encoding, len(body)) == body
    with pytest.raises(ProtocolError, match="inflates to more than"):
        decode_content(compressed, encoding, len(body) - 1)
    with pytest.raises(ProtocolError, match="truncated"):
        decode_content(compressed[:-10], encoding, len(body))
    with pytest.raises(ProtocolError, match="not valid"):
        decode_content(b"plain" + compressed, encoding, len(body))


def test_a_compression_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(bytes(50_000_000))  # 50 MB of zeros in about 50 kB
    with pytest.raises(ProtocolError, match="inflates to more than 1,000 bytes"):
        decode_content(bomb, "gzip", 1000)
    with pytest.raises(ProtocolError, match="not supported"):
        decode_content(b"", "br", 1000)
    assert decode_content(b"as is", None, 10) == decode_content(b"as is", "identity", 10)
