"""Pixel measures that tell whether a mask belongs to its shot, and what a shot's file really holds.

Each function takes the arrays a validation worker already has (BGR(A), as OpenCV decodes them) or the
file's first bytes, and returns a number or a short text for one metadata column.
"""

from __future__ import annotations

import hashlib

import numpy as np

from garmentseg.imageio import ImageHeader

_PNG_MODES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_JPEG_MODES = {1: "greyscale", 3: "YCbCr colour", 4: "CMYK"}
# What the contract accepts: 8-bit colour, with or without alpha (a cutout's alpha is checked on its own).
ACCEPTED_MODES = ("RGB 8-bit", "RGBA 8-bit")
SIDES = ("top", "bottom", "left", "right")
# Perceptual hash: a (HASH_SIDE+1) x HASH_SIDE difference hash, HASH_SIDE**2 bits (a garment's outline
# and pattern; its flat colour is compared separately, a binary hash cannot see it).
HASH_SIDE = 16
# Mean gradient (Sobel of the blurred grey shot) below which no position of the mask finds an edge: the
# garment is inseparable from its surroundings, the contrast check's case, and alignment is not measured.
# A clean edge of the synthetic studio scores in the hundreds, sensor noise alone under 5.
GRADIENT_FLOOR = 10.0


def colour_mode(data: bytes, header: ImageHeader) -> str:
    """'<mode> <depth>-bit' from the PNG IHDR colour type or the JPEG frame header's component count."""
    if header.format == "png":
        mode = _PNG_MODES.get(data[25], f"colour type {data[25]}")
    else:
        mode = _JPEG_MODES.get(header.channels, f"{header.channels} components")
    return f"{mode} {header.bit_depth}-bit"


def edge_contrast(image: np.ndarray, mask: np.ndarray, band: int) -> float | None:
    """Mean colour distance across the mask edge: how separable the garment is from what surrounds it.

    For every pixel on the mask edge, the mean colour of the band just inside (mask pixels 2..band+1 px
    from the edge) is compared with the mean colour of the band just outside, both taken locally around
    that edge pixel, so a garment that is white against a white mannequin but dark against the backdrop
    scores low where it touches the mannequin. The pixel ring right at the edge is skipped: it mixes both
    sides. Returns the mean Euclidean colour distance over the edge (0-441), or None when the mask has no
    edge (empty or full). Measured on this code: a garment recoloured like its surroundings scores ~2
    (sensor noise), the synthetic studio's deliberate low-contrast garments 25-60, ordinary ones 80-300;
    the floor (validation.contrast_min = 12) fails only the inseparable ones.
    """
    import cv2

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    pad = 2 * band + 4  # the bands and the box window around the garment; the rest of the frame is idle
    top, left = max(0, rows[0] - pad), max(0, cols[0] - pad)
    image, mask = (
        image[top : rows[-1] + pad + 1, left : cols[-1] + pad + 1],
        mask[top : rows[-1] + pad + 1, left : cols[-1] + pad + 1],
    )
    m = mask.astype(np.uint8)
    one = np.ones((3, 3), np.uint8)
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 3, 2 * band + 3))
    eroded1, dilated1 = cv2.erode(m, one), cv2.dilate(m, one)
    inner = eroded1 & (1 - cv2.erode(m, wide))
    outer = cv2.dilate(m, wide) & (1 - dilated1)
    edge = (m & (1 - eroded1)).astype(bool)
    if not edge.any() or not inner.any() or not outer.any():
        return None
    img = image[..., :3].astype(np.float32)
    ksize = (4 * band + 5, 4 * band + 5)

    def local_mean(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = region.astype(np.float32)
        sums = cv2.boxFilter(np.dstack([img * r[..., None], r]), -1, ksize, normalize=False)
        return sums[..., :3][edge], sums[..., 3][edge]

    sum_in, n_in = local_mean(inner)
    sum_out, n_out = local_mean(outer)
    ok = (n_in > 0) & (n_out > 0)
    if not ok.any():
        return None
    diff = sum_in[ok] / n_in[ok, None] - sum_out[ok] / n_out[ok, None]
    return float(np.sqrt((diff**2).sum(axis=1)).mean())


def is_grey(bgr: np.ndarray) -> bool:
    """True when no pixel's channels differ by more than 2 levels: a greyscale picture saved as RGB(A)."""
    import cv2

    b, g, r = (np.ascontiguousarray(bgr[..., i]) for i in range(3))
    return max(cv2.norm(b, g, cv2.NORM_INF), cv2.norm(g, r, cv2.NORM_INF)) <= 2


def border_opaque_share(alpha: np.ndarray) -> float:
    """Share of the frame's outermost pixels (all four sides) that are opaque (alpha >= 128).

    A garment cut out of a studio shot leaves the backdrop along the frame transparent; an inverted alpha
    makes the backdrop opaque, so the frame's border is almost all opaque whatever the garment's area.
    """
    ring = np.concatenate([alpha[0], alpha[-1], alpha[1:-1, 0], alpha[1:-1, -1]])
    return float(np.count_nonzero(ring >= 128) / ring.size)


def touched_sides(alpha: np.ndarray) -> str | None:
    """The frame sides the mask reaches ('left,top'), or None: one opaque pixel on the outer line counts."""
    lines = {"top": alpha[0], "bottom": alpha[-1], "left": alpha[:, 0], "right": alpha[:, -1]}
    touched = [side for side in SIDES if (lines[side] >= 128).any()]
    return ",".join(touched) or None


def edge_alignment(bgr: np.ndarray, mask: np.ndarray, radius: int) -> float | None:
    """How well the mask sits on its garment: the image gradient along the mask's edge where it is, over
    the best found with the mask moved by up to `radius` px in any direction (1.0: nowhere fits better).

    A retoucher's mask follows the garment's outline, where the (lightly blurred) shot changes most, so
    its own position is the best one. A mask shifted by a few percent fits far better once moved back; a
    mask from another shot runs over flat backdrop and garment wherever it is moved. Comparing a mask with
    itself moved makes the score independent of how contrasted the garment is. None without an edge, or
    when no position finds one (GRADIENT_FLOOR).
    """
    import cv2

    m = mask.astype(np.uint8)
    ys, xs = np.nonzero(m - cv2.erode(m, np.ones((3, 3), np.uint8)))
    if ys.size == 0 or m.all():
        return None
    gray = cv2.cvtColor(np.ascontiguousarray(bgr[..., :3]), cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.0)
    grad = np.pad(
        cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)),
        radius,
        mode="edge",
    )
    ys, xs = ys + radius, xs + radius
    here = float(grad[ys, xs].mean())
    best = max(
        float(grad[ys + dy, xs + dx].mean())
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
    )
    return None if best < GRADIENT_FLOOR else here / best


def pixel_digest(image: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape: equal for re-encodings of the same image."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image[..., :3]).tobytes())
    return digest.hexdigest()


def difference_hash(bgr: np.ndarray) -> str:
    """A HASH_SIDE**2-bit difference hash (dHash) in hex: near-identical images differ in few bits."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(bgr[..., :3]), cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (HASH_SIDE + 1, HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{HASH_SIDE * HASH_SIDE // 4}x}"


def colour_distance(a: str, b: str) -> int:
    """Largest channel difference of two '#rrggbb' colours (0-255)."""
    return max(abs(int(a[i : i + 2], 16) - int(b[i : i + 2], 16)) for i in (1, 3, 5))


def garment_signature(bgr_small: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
    """(dHash of the garment alone, its mean colour '#rrggbb'): what near-duplicate shots share. Hashing
    the shot under its mask keeps a shared backdrop and mannequin from making two shots look alike."""
    import cv2

    blue, green, red, _ = cv2.mean(bgr_small, mask=mask.astype(np.uint8))
    return (
        difference_hash(np.where(mask[..., None], bgr_small, 0)),
        f"#{round(red):02x}{round(green):02x}{round(blue):02x}",
    )


def hamming(a: str, b: str) -> int:
    """Differing bits of two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
