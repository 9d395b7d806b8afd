import struct
import zlib

import cv2
import numpy as np
import pytest

from garmentseg.imageio import ImageError, check_size, decode, encode_png, read_header


def _png(shape: tuple[int, ...]) -> bytes:
    rng = np.random.default_rng(0)
    return encode_png(rng.integers(0, 255, shape, dtype=np.uint8))


def test_rgba_round_trip_keeps_channel_order() -> None:
    img = np.zeros((6, 4, 4), np.uint8)
    img[..., 0] = 200  # red
    img[..., 3] = 255
    img[0, 0, 3] = 0
    out = decode(encode_png(img), max_pixels=100, alpha=True)
    assert out.shape == (6, 4, 4) and out[1, 1, 0] == 200 and out[1, 1, 2] == 0 and out[0, 0, 3] == 0
    header = read_header(encode_png(img))
    assert (header.format, header.width, header.height, header.has_alpha) == ("png", 4, 6, True)


def test_rgb_png_has_no_alpha_and_decodes_opaque() -> None:
    data = _png((5, 7, 3))
    assert not read_header(data).has_alpha
    assert (decode(data, max_pixels=100, alpha=True)[..., 3] == 255).all()


def test_jpeg_header_and_decode() -> None:
    _, buf = cv2.imencode(".jpg", np.full((30, 20, 3), 128, np.uint8))
    data = buf.tobytes()
    header = read_header(data)
    assert (header.format, header.width, header.height) == ("jpeg", 20, 30)
    assert decode(data, max_pixels=10_000).shape == (30, 20, 3)


def test_a_jpeg_is_decoded_as_a_viewer_shows_it_with_its_exif_orientation() -> None:
    import io

    from PIL import Image

    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :20] = 255  # stored landscape, a white band on the left
    picture = Image.fromarray(stored)
    exif = picture.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display", as a phone held upright writes it
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    shown = decode(buffer.getvalue(), max_pixels=10_000)
    assert shown.shape == (60, 40, 3), "portrait, as shown"
    assert shown[:15].mean() > 240 and shown[25:].mean() < 15, "the band is on top"


def test_truncated_png_is_an_error_not_a_crash() -> None:
    data = _png((64, 64, 3))
    with pytest.raises(ImageError) as info:
        decode(data[: len(data) // 2], max_pixels=10_000)
    assert info.value.kind == "corrupt"


def test_truncated_jpeg_is_refused_by_its_missing_end_marker() -> None:
    rng = np.random.default_rng(1)
    data = cv2.imencode(".jpg", rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))[1].tobytes()
    with pytest.raises(ImageError) as info:
        decode(data[:-400], max_pixels=10_000)
    assert info.value.kind == "truncated" and "end-of-image" in str(info.value)
    assert decode(data + b"\x00" * 16, max_pixels=10_000).shape == (64, 48, 3)  # padding after EOI is fine


@pytest.mark.parametrize(
    ("data", "kind"), [(b"", "empty"), (b"GIF89a....", "not_image"), (b"\x89PNG\r\n\x1a\n", "truncated")]
)
def test_non_images(data: bytes, kind: str) -> None:
    with pytest.raises(ImageError) as info:
        read_header(data)
    assert info.value.kind == kind


def test_bomb_is_refused_from_the_header_alone() -> None:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    header = read_header(data)
    with pytest.raises(ImageError, match="exceeds") as info:
        check_size(header, max_pixels=40_000_000)
    assert info.value.kind == "too_large"
    with pytest.raises(ImageError, match="exceeds"):
        decode(data, max_pixels=40_000_000)
