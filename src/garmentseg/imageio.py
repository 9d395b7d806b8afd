"""Image bytes in, RGB(A) uint8 arrays out, with the size checked from the header before any decoding.

Validation, training, `predict` and the service all decode through here, so a decompression bomb or an
absurd size is refused in one place, and every array the platform handles is RGB order (OpenCV's BGR stays
inside this module).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# PNG colour types -> channel count (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """Bytes that are not a usable image; `kind` is a short machine-readable reason."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "png" | "jpeg"
    width: int
    height: int
    channels: int
    has_alpha: bool  # alpha channel, or a PNG palette/grey with a tRNS transparency chunk
    bit_depth: int


def sniff_format(data: bytes) -> str | None:
    """The real container format from the magic bytes, whatever the file is called."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return None


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError("truncated", "PNG header (IHDR) is missing or truncated")
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    if zlib.crc32(data[12:29]) & 0xFFFFFFFF != struct.unpack(">I", data[29:33])[0]:
        raise ImageError("corrupt", "PNG header (IHDR) checksum mismatch")
    if color_type not in _PNG_CHANNELS:
        raise ImageError("corrupt", f"PNG colour type {color_type} is invalid")
    has_trns = color_type in (0, 2, 3) and b"tRNS" in data[: data.find(b"IDAT") if b"IDAT" in data else None]
    channels = _PNG_CHANNELS[color_type]
    return ImageHeader("png", width, height, channels, color_type in (4, 6) or has_trns, depth)


def _jpeg_header(data: bytes) -> ImageHeader:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 2 if marker != 0xFF else 1
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            depth, height, width, channels = struct.unpack(">BHHB", data[i + 4 : i + 10])
            return ImageHeader("jpeg", width, height, channels, False, depth)
        i += 2 + length
    raise ImageError("truncated", "JPEG frame header (SOF) not found")


def jpeg_is_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan. Some decoders (libjpeg as OpenCV 4
    calls it) return a cut-off file grey below the cut instead of failing; checking the marker makes the
    refusal independent of the decoder and names the reason. An EXIF thumbnail's own markers come before the
    main scan, and scan data never holds 0xFFD9 (0xFF bytes are stuffed)."""
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan) >= 0


def read_header(data: bytes) -> ImageHeader:
    """Parse width/height/channels from the first bytes only; raises ImageError for non-images."""
    if not data:
        raise ImageError("empty", "zero-byte file")
    fmt = sniff_format(data)
    if fmt == "png":
        header = _png_header(data)
    elif fmt == "jpeg":
        header = _jpeg_header(data)
    else:
        raise ImageError("not_image", "not a PNG or JPEG (magic bytes do not match)")
    if header.width == 0 or header.height == 0:
        raise ImageError("corrupt", f"{header.format.upper()} header says {header.width}x{header.height}")
    return header


def check_size(header: ImageHeader, max_pixels: int) -> None:
    """Refuse absurd dimensions (a decompression bomb) before a single pixel is decoded."""
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageError(
            "too_large",
            f"{header.width}x{header.height} = {pixels} pixels exceeds the limit of {max_pixels} pixels",
        )


def decode(data: bytes, *, max_pixels: int, alpha: bool = False) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 RGB (HxWx3) or, with alpha=True, RGBA (HxWx4).

    Grey, palette and 16-bit inputs are normalised, a JPEG's EXIF orientation is applied; a missing alpha channel becomes opaque when alpha=True
    (callers that require a real alpha channel check ImageHeader.has_alpha first).
    """
    import cv2

    header = read_header(data)
    check_size(header, max_pixels)
    if header.format == "jpeg" and not jpeg_is_complete(data):
        raise ImageError("truncated", "JPEG data ends before its end-of-image marker (truncated file)")
    buf = np.frombuffer(data, dtype=np.uint8)
    # A JPEG is decoded as a viewer shows it, its EXIF orientation applied (a phone photo stored sideways
    # and tagged "rotate 90"): the cutout must lie on the picture the client sees. A PNG is read as stored
    # (IMREAD_UNCHANGED keeps its alpha and bit depth; studio exports carry no orientation).
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if header.format == "jpeg" else cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError("corrupt", f"{header.format.upper()} data cannot be decoded (truncated or corrupt)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        return rgba if alpha else np.ascontiguousarray(rgba[..., :3])
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if alpha:
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    return rgb


def read_image(path: Path, *, max_pixels: int, alpha: bool = False) -> np.ndarray:
    """Decode a file; errors name the file."""
    try:
        return decode(Path(path).read_bytes(), max_pixels=max_pixels, alpha=alpha)
    except ImageError as exc:
        raise ImageError(exc.kind, f"{path}: {exc}") from None


# A shot smaller than this on a side is a thumbnail or an icon, not a studio shot: refused (the service's
# 400 too_small) or skipped (`predict`), never cut out and queued; its cutout would come back "certain" (a
# 1x1 image is one confident pixel). The model itself reads 128 px or more.
MIN_SIDE_PX = 16


def too_small(image: np.ndarray) -> str | None:
    """Why an image is too small to be a shot, or None."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE_PX:
        return f"image is {width}x{height}; a shot needs at least {MIN_SIDE_PX} px on each side"
    return None


def encode_png(image: np.ndarray) -> bytes:
    """RGB, RGBA or single-channel uint8 array -> PNG bytes."""
    import cv2

    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ImageError("encode", "PNG encoding failed")
    return buf.tobytes()


def write_png(path: Path, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))
