"""The pipeline's image steps (app.pipeline): decode, and bring any picture of a digit to MNIST
form."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageDraw, PngImagePlugin

from app.api.predict import status_code_of
from app.pipeline.decode import decode_gray_png, decode_image, to_grayscale
from app.pipeline.errors import BlankImage, ImageRejected, ImageTooLarge, UnsupportedImage
from app.pipeline.mnist_form import (
    MNIST_BOX,
    MNIST_CENTER,
    center_by_mass,
    crop_to_ink,
    ink_levels,
    is_light_background,
    is_mnist_form,
    level_counts,
    median_level,
    scale_to_box,
    to_mnist_form,
)
from app.pipeline.prepare import prepare
from app.pipeline.uploads import Upload
from training.mnist import load_mnist

MAX_PIXELS = 16_000_000


def prepare_image(data: bytes, max_pixels: int):
    """``prepare`` for an upload with no filename (errors then name it ``image 0``)."""
    return prepare(Upload(0, None, data), max_pixels)


def center_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    mass = pixels.astype(np.float64)
    rows, cols = np.indices(pixels.shape)
    return (rows * mass).sum() / mass.sum(), (cols * mass).sum() / mass.sum()


def ink_box(pixels: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of non-zero pixels."""
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit gray pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + png_chunk(b"IEND", b"")
    )


# MNIST form ----------------------------------------------------------------------------------


def test_mnist_images_go_straight_in(mnist_test_set):
    images, _ = mnist_test_set
    for pixels in images[:50]:
        assert np.array_equal(to_mnist_form(pixels), pixels)


def test_mnist_png_is_prepared_bit_for_bit(mnist_test_set, encode_image):
    pixels = mnist_test_set[0][0]
    prepared = prepare_image(encode_image(pixels), MAX_PIXELS)
    assert prepared.input_size == (28, 28)
    assert np.array_equal(prepared.pixels, pixels)


def test_every_mnist_image_is_mnist_form_and_passes_bit_for_bit(mnist_dir):
    """The rule's bounds were measured on all 70,000 MNIST images: every one must pass as is."""
    data = load_mnist(mnist_dir)
    for split in (data.train, data.test):
        for pixels in split.images[:, 0].numpy():
            assert is_mnist_form(pixels)
            assert to_mnist_form(pixels) is pixels


def tight_crop(pixels: np.ndarray, tall: int = 26) -> np.ndarray:
    """The digit cropped to its ink, scaled to ``tall`` px high (aspect kept), centred in 28x28."""
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    ink = Image.fromarray(pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    width = min(28, max(1, round(ink.width * tall / ink.height)))
    frame = Image.new("L", (28, 28))
    frame.paste(ink.resize((width, tall), Image.Resampling.LANCZOS), ((28 - width) // 2, 1))
    return np.asarray(frame)


@pytest.mark.parametrize(
    "render",
    [
        tight_crop,
        lambda p: tight_crop(p, tall=12),  # a small digit in the middle of the frame
        lambda p: np.roll(p, (4, -5), axis=(0, 1)),  # off-centre
        lambda p: np.asarray(Image.fromarray(p[4:24, 4:24]).resize((28, 28))),  # stretched
    ],
    ids=["tight-crop", "small", "off-centre", "stretched"],
)
def test_28x28_digits_not_in_mnist_form_are_brought_to_it(mnist_test_set, render):
    for pixels in mnist_test_set[0][:20]:
        rendered = render(pixels)
        assert not is_mnist_form(rendered)
        prepared = to_mnist_form(rendered)
        assert is_mnist_form(prepared)
        assert max(ink_box(prepared)) == MNIST_BOX


def test_28x28_black_on_white_is_not_mnist_form(mnist_test_set):
    inverted = 255 - mnist_test_set[0][0]
    assert is_light_background(np.median(inverted))
    prepared = to_mnist_form(inverted)
    assert not is_light_background(np.median(prepared))  # inverted back: light ink on dark


# Levels, crop, scale, centre -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda height: st.integers(1, 40).flatmap(
            lambda width: st.lists(
                st.integers(0, 255), min_size=height * width, max_size=height * width
            ).map(lambda levels: np.array(levels, np.uint8).reshape(height, width))
        )
    )
)
def test_median_level_is_numpys_median(gray):
    """Odd and even pixel counts, any levels: the same value as np.median."""
    assert median_level(level_counts(gray)) == float(np.median(gray))


def test_ink_levels_invert_a_light_background_and_drop_paper_texture():
    rng = np.random.default_rng(0)
    paper = rng.integers(180, 210, size=(60, 40)).astype(np.uint8)  # grey, textured paper
    paper[10:50, 18:22] = 30  # a dark stroke
    levels = ink_levels(paper)
    assert levels[30, 20] == 1.0
    assert levels[:, :15].max() == 0.0  # texture is background
    assert ink_box(levels) == (40, 4)


def test_ink_levels_keep_light_ink_on_dark():
    dark = np.zeros((40, 40), np.uint8)
    dark[5:35, 10:14] = 200
    levels = ink_levels(dark)
    assert levels.max() == 1.0 and ink_box(levels) == (30, 4)


@pytest.mark.parametrize(
    "gray",
    [
        np.zeros((28, 28), np.uint8),
        np.full((100, 80), 255, np.uint8),
        np.full((50, 50), 128, np.uint8),
        np.random.default_rng(1).integers(120, 140, size=(64, 64)).astype(np.uint8),  # faint noise
    ],
    ids=["black", "white", "grey", "low-contrast-noise"],
)
def test_blank_images_are_rejected(gray):
    with pytest.raises(BlankImage, match="blank"):
        to_mnist_form(gray)


def test_a_speck_is_not_a_digit():
    white = np.full((200, 200), 255, np.uint8)
    white[100, 100] = 0
    with pytest.raises(BlankImage, match="speck"):
        to_mnist_form(white)


def test_crop_to_ink_is_the_bounding_box():
    levels = np.zeros((30, 30), np.float32)
    levels[5, 7] = levels[20, 12] = 0.5
    assert crop_to_ink(levels).shape == (16, 6)


@pytest.mark.parametrize(("height", "width", "expected"), [(100, 50, (20, 10)), (30, 300, (2, 20))])
def test_scale_to_box_fits_the_longer_side_keeping_aspect(height, width, expected):
    scaled = scale_to_box(np.ones((height, width), np.float32))
    assert scaled.shape == expected
    assert scaled.dtype == np.uint8 and scaled.max() == 255


def test_scale_to_box_restores_full_ink_on_thin_strokes():
    thin = np.zeros((400, 400), np.float32)
    thin[:, 200] = 1.0  # a 1-px stroke greys out when shrunk 20x
    thin[0, :] = 1.0
    assert scale_to_box(thin).max() == 255


def test_center_by_mass_puts_mass_at_mnist_centre():
    digit = np.zeros((20, 10), np.uint8)
    digit[:, :3] = 255  # mass on the left edge of the box
    framed = center_by_mass(digit)
    row, col = center_of_mass(framed)
    assert abs(row - MNIST_CENTER) <= 0.5 and abs(col - MNIST_CENTER) <= 0.5


def test_center_by_mass_never_pushes_ink_out_of_the_frame():
    digit = np.zeros((20, 20), np.uint8)
    digit[0, 0] = 255  # all mass in a corner: the shift is clamped
    digit[19, 19] = 1
    framed = center_by_mass(digit)
    assert framed.sum() == digit.sum()


strokes = st.lists(
    st.tuples(*[st.floats(0.0, 1.0)] * 4, st.integers(1, 12)), min_size=1, max_size=4
)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(30, 400),
    height=st.integers(30, 400),
    light_background=st.booleans(),
    lines=strokes,
)
def test_any_drawing_comes_out_in_mnist_form(width, height, light_background, lines):
    """Whatever is drawn, wherever: 28x28, ink fits the 20-px box, mass near the centre."""
    background, ink = (255, 0) if light_background else (0, 255)
    image = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1, stroke in lines:
        draw.line(
            [(x0 * (width - 1), y0 * (height - 1)), (x1 * (width - 1), y1 * (height - 1))],
            fill=ink,
            width=stroke,
        )
    try:
        framed = to_mnist_form(np.asarray(image))
    except BlankImage:
        return  # a line too short to be ink
    assert framed.shape == (28, 28) and framed.dtype == np.uint8
    assert framed.max() == 255
    assert max(ink_box(framed)) <= MNIST_BOX
    row, col = center_of_mass(framed)
    # Within a pixel of the centre, unless the shift had to be clamped to keep ink in the frame.
    assert abs(row - MNIST_CENTER) <= 4.5 and abs(col - MNIST_CENTER) <= 4.5


def test_inverted_mnist_digit_comes_back_close_to_the_original(mnist_test_set):
    original = mnist_test_set[0][0]
    restored = to_mnist_form(255 - original)
    assert np.corrcoef(original.ravel(), restored.ravel())[0, 1] > 0.9


# Grayscale ------------------------------------------------------------------------------------


def test_grayscale_of_each_mode():
    rgb = Image.new("RGB", (4, 4), (255, 0, 0))
    assert to_grayscale(rgb)[0, 0] == 76  # ITU-R 601 luma of pure red
    assert to_grayscale(Image.new("1", (4, 4), 1))[0, 0] == 255
    assert to_grayscale(Image.new("CMYK", (4, 4), (0, 0, 0, 255)))[0, 0] == 0


def test_cielab_reads_its_lightness_and_unconvertible_modes_are_unsupported():
    assert to_grayscale(Image.new("LAB", (4, 4), (200, 128, 128)))[0, 0] == 200
    with pytest.raises(UnsupportedImage, match="colour mode La"):
        to_grayscale(Image.new("La", (4, 4)))


def test_transparency_is_composited_on_white():
    canvas = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # a browser canvas: transparent black
    canvas.putpixel((5, 5), (0, 0, 0, 255))
    gray = to_grayscale(canvas)
    assert gray[0, 0] == 255 and gray[5, 5] == 0


def test_palette_transparency_is_composited_on_white():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.info["transparency"] = 0
    assert to_grayscale(palette)[0, 0] == 255


def test_grayscale_transparency_is_composited_on_white(encode_image):
    """An 8-bit gray PNG whose black is transparent (a tRNS chunk) reads as white there."""
    gray = Image.new("L", (4, 4), 0)
    gray.putpixel((1, 1), 128)
    decoded = decode_image(encode_image(gray, transparency=0), MAX_PIXELS)
    assert decoded.mode == "L" and decoded.has_transparency_data
    assert to_grayscale(decoded).tolist()[0][:2] == [255, 255]
    assert to_grayscale(decoded)[1, 1] == 128


def test_sixteen_bit_grayscale_is_scaled_not_clipped(encode_image):
    wide = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    decoded = decode_image(encode_image(Image.fromarray(wide)), MAX_PIXELS)
    assert decoded.mode.startswith("I")
    assert to_grayscale(decoded).tolist() == [[0, 128, 255]]


# Decoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_each_format_decodes_to_the_same_digit(mnist_test_set, encode_image, format):
    pixels = mnist_test_set[0][0]
    prepared = prepare_image(encode_image(pixels, format, quality=95), MAX_PIXELS)
    assert prepared.input_size == (28, 28)
    tolerance = 16 if format in {"JPEG", "WEBP"} else 0  # lossy formats
    assert np.abs(prepared.pixels.astype(int) - pixels).mean() <= tolerance


def test_animated_gif_uses_the_first_frame(mnist_test_set, encode_image):
    first, second = (Image.fromarray(pixels) for pixels in mnist_test_set[0][:2])
    data = encode_image(first, "GIF", save_all=True, append_images=[second])
    assert np.array_equal(prepare_image(data, MAX_PIXELS).pixels, np.asarray(first))


def test_exif_orientation_is_applied(encode_image):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    data = encode_image(Image.new("L", (40, 20), 255), "JPEG", exif=exif)
    assert decode_image(data, MAX_PIXELS).size == (20, 40)


def test_empty_bytes_are_rejected():
    with pytest.raises(ImageRejected, match="empty") as caught:
        decode_image(b"", MAX_PIXELS)
    assert status_code_of(caught.value) == 422


def test_non_images_are_unsupported():
    with pytest.raises(UnsupportedImage, match="PNG, JPEG") as caught:
        decode_image(b"%PDF-1.7 not an image", MAX_PIXELS)
    assert status_code_of(caught.value) == 415


def test_truncated_image_is_rejected(encode_image):
    data = encode_image(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], MAX_PIXELS)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageTooLarge, match="S4_MAX_PIXELS") as caught:
        decode_image(png_claiming_size(5000, 5000), MAX_PIXELS)
    assert status_code_of(caught.value) == 413


def test_pillows_own_bomb_check_is_a_rejection_too():
    with pytest.raises(ImageTooLarge, match="too many pixels"):
        decode_image(png_claiming_size(20_000, 20_000), max_pixels=10**12)


def test_prepared_image_reports_the_uploaded_size(encode_image):
    image = Image.new("L", (123, 45), 255)
    ImageDraw.Draw(image).line([(10, 10), (100, 30)], fill=0, width=5)
    prepared = prepare_image(encode_image(image), MAX_PIXELS)
    assert prepared.input_size == (123, 45)
    assert prepared.pixels.shape == (28, 28)


# The OpenCV fast path for plain grayscale PNGs ----------------------------------------------
# decode_gray_png must read exactly what decode_image + to_grayscale read, or decline (None).


def pillow_gray(data: bytes) -> np.ndarray:
    return to_grayscale(decode_image(data, MAX_PIXELS))


def test_mnist_pngs_take_the_fast_path(mnist_test_set, encode_image):
    for pixels in mnist_test_set[0][:50]:
        assert np.array_equal(decode_gray_png(encode_image(pixels), MAX_PIXELS), pixels)


PNG_EXTRAS = ["dpi", "icc_profile", "text", "transparency", "exif"]
PLAIN_EXTRAS = {"dpi", "icc_profile"}  # chunks that leave the pixels as they are: pHYs, iCCP


def gray_png(pixels: np.ndarray, extras: set[str], compress_level: int) -> bytes:
    options: dict = {"compress_level": compress_level}
    if "dpi" in extras:
        options["dpi"] = (300, 300)
    if "icc_profile" in extras:
        options["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if "text" in extras:
        options["pnginfo"] = PngImagePlugin.PngInfo()
        options["pnginfo"].add_text("Comment", "a digit")
    if "transparency" in extras:
        options["transparency"] = int(pixels[0, 0])
    if "exif" in extras:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees to show: Pillow turns it, OpenCV would not
        options["exif"] = exif
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", **options)
    return buffer.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 64),
    st.integers(1, 64),
    st.integers(0, 2**32 - 1),
    st.integers(0, 9),
    st.sets(st.sampled_from(PNG_EXTRAS)),
)
def test_fast_path_reads_plain_gray_pngs_as_pillow_does(
    height, width, seed, compress_level, extras
):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    data = gray_png(pixels, extras, compress_level)
    fast = decode_gray_png(data, MAX_PIXELS)
    if extras <= PLAIN_EXTRAS:
        assert np.array_equal(fast, pillow_gray(data))
        assert np.array_equal(fast, pixels)
    else:
        assert fast is None  # Pillow's to read: it applies transparency and EXIF orientation


@pytest.mark.parametrize("mode", ["1", "P", "LA", "RGB", "RGBA", "I;16"])
def test_fast_path_leaves_other_modes_to_pillow(mode, encode_image):
    image = Image.new(mode, (28, 28))
    assert decode_gray_png(encode_image(image), MAX_PIXELS) is None


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["truncate", "flip", "flip and fix the CRC", "insert", "delete"]),
    st.data(),
)
def test_fast_path_never_reads_a_damaged_png_pillow_would_not(seed, damage, data):
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    png = bytearray(gray_png(pixels, set(), compress_level=data.draw(st.integers(0, 9))))
    at = data.draw(st.integers(0, len(png) - 1))
    if damage == "truncate":
        del png[at:]
    elif damage == "flip":
        png[at] ^= 1 << data.draw(st.integers(0, 7))
    elif damage == "flip and fix the CRC":  # so the decoders meet the damaged data itself
        chunks, offset = [], 8
        while offset < len(png):
            (length,) = struct.unpack_from(">I", png, offset)
            chunks.append((offset, length))
            offset += 12 + length
        offset, length = data.draw(st.sampled_from([c for c in chunks if c[1] > 0]))
        start, end = offset + 8, offset + 8 + length  # the chunk's data
        png[data.draw(st.integers(start, end - 1))] ^= 1 << data.draw(st.integers(0, 7))
        struct.pack_into(">I", png, end, zlib.crc32(png[offset + 4 : end]))
    elif damage == "insert":
        png[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        del png[at : at + data.draw(st.integers(1, 16))]
    fast = decode_gray_png(bytes(png), MAX_PIXELS)
    if fast is not None:
        assert np.array_equal(fast, pillow_gray(bytes(png)))


def test_what_the_fast_path_declines_pillow_rejects_as_before(encode_image):
    data = encode_image(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        prepare_image(data[: len(data) // 2], MAX_PIXELS)
    with pytest.raises(ImageTooLarge, match="S4_MAX_PIXELS"):
        prepare_image(png_claiming_size(5000, 5000), MAX_PIXELS)
