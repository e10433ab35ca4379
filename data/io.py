"""Decoding of dataset files, and a small PNG encoder.

Why pypng for SYNTHIA labels: ``GT/LABELS/*.png`` of SYNTHIA-RAND-CITYSCAPES are 16-bit, multi-channel PNGs
whose channel 0 holds the class id (channel 1 the instance id). Pillow has no 16-bit RGB mode: it converts
such files to 8 bits per channel by keeping the high byte, so every class id (< 256) becomes 0 and the labels
are silently lost. The original code used imageio's FreeImage plugin (a binary download), DAFormer uses
OpenCV's ``IMREAD_UNCHANGED``; pypng is a pure-Python, dependency-free decoder that returns the exact 16-bit
samples for every PNG filter type and interlacing, and is fast enough for the one-off conversion by
``dastudy data prepare`` (0.1-1.3 s per 1280×760 label, depending on the PNG filters). After that conversion,
training reads 8-bit PNGs.

Every decoder here raises :class:`DatasetError` naming the file when it is missing, truncated or not of the
expected kind, so that one bad file out of thousands is easy to find.

:func:`encode_png` is a minimal PNG writer (numpy + zlib + struct; 8/16-bit, 1/3 channels, every filter type).
It writes the synthetic benchmark's 16-bit SYNTHIA-style labels and is deliberately independent of the
decoder, so that tests exercise the reader on files produced by a different encoder.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DatasetError", "read_image", "read_label", "read_synthia_label", "encode_png", "write_png",
           "write_image", "atomic_write_bytes"]


class DatasetError(ValueError):
    """A dataset that cannot be used as given: missing root/split/file, corrupt or unexpected file."""


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{path}: missing {what}")


def read_image(path: str | Path) -> Image.Image:
    """An RGB image, fully decoded (a truncated or corrupt file raises DatasetError naming it)."""
    path = Path(path)
    _require_file(path, "image file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
    except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated/corrupt data
        raise DatasetError(f"{path}: cannot decode the image ({err}); the file is corrupt or truncated") from None


def read_label(path: str | Path) -> np.ndarray:
    """An 8-bit single-channel label map (labelIds or trainIds), as a (H, W) uint8 array.

    Palette PNGs (GTA5 labels) are read as their indices, which are the label ids.
    """
    path = Path(path)
    _require_file(path, "label file")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("L", "P"):
                return np.array(img, dtype=np.uint8)
            if mode in ("I", "I;16") and img.getextrema()[1] < 256:  # 16-bit grey that holds small ids
                return np.array(img).astype(np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: cannot decode the label ({err}); the file is corrupt or truncated") from None
    raise DatasetError(f"{path}: expected a single-channel 8-bit label-id PNG, got mode {mode!r} "
                       "(a colour visualisation instead of the *_labelIds.png file?)")


def read_synthia_label(path: str | Path) -> np.ndarray:
    """Channel 0 (the class id) of a SYNTHIA 16-bit label PNG, as a (H, W) uint16 array."""
    import png  # pypng; see the module docstring for why not Pillow

    path = Path(path)
    _require_file(path, "label file")
    try:
        width, height, rows, info = png.Reader(filename=str(path)).read()
        if info["bitdepth"] != 16:
            raise DatasetError(
                f"{path}: expected a 16-bit SYNTHIA label PNG (class id in channel 0), found a "
                f"{info['bitdepth']}-bit PNG. If these are already converted trainId labels, put them in "
                "GT/LABELS_TRAINID (see `dastudy data prepare`); GT/LABELS must hold the original files")
        if info.get("palette"):
            raise DatasetError(f"{path}: expected a 16-bit SYNTHIA label PNG, found a palette PNG")
        planes = info["planes"]
        flat = np.concatenate([np.frombuffer(row, dtype=np.uint16) for row in rows])
    except DatasetError:
        raise
    except Exception as err:  # pypng raises FormatError/ChunkError, zlib.error, EOFError, ... on bad data
        raise DatasetError(f"{path}: cannot decode the SYNTHIA label ({type(err).__name__}: {err}); "
                           "the file is corrupt or truncated") from None
    if flat.size != width * height * planes:
        raise DatasetError(f"{path}: truncated label data ({flat.size} of {width * height * planes} samples)")
    return flat.reshape(height, width, planes)[:, :, 0].copy()


# ---------------------------------------------------------------------------------------------------------
# minimal PNG encoder


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _paeth(left: np.ndarray, up: np.ndarray, upleft: np.ndarray) -> np.ndarray:
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    return np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))


def _filter_scanlines(raw: np.ndarray, bytes_per_pixel: int, filter_type: int) -> np.ndarray:
    """Apply one PNG filter to every scanline of ``raw`` ((H, row_bytes) uint8); prepends the filter byte.

    Filters predict from the *unfiltered* neighbours, so the whole image can be filtered at once.
    """
    x = raw.astype(np.int16)
    left = np.zeros_like(x)
    left[:, bytes_per_pixel:] = x[:, :-bytes_per_pixel]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    upleft = np.zeros_like(x)
    upleft[1:, bytes_per_pixel:] = x[:-1, :-bytes_per_pixel]
    predictor = {0: np.zeros_like(x), 1: left, 2: up, 3: (left + up) // 2, 4: _paeth(left, up, upleft)}
    if filter_type not in predictor:
        raise ValueError(f"filter_type = {filter_type!r}; allowed: 0 (none), 1 (sub), 2 (up), 3 (average), 4 (paeth)")
    filtered = ((x - predictor[filter_type]) & 0xFF).astype(np.uint8)
    return np.concatenate([np.full((raw.shape[0], 1), filter_type, dtype=np.uint8), filtered], axis=1)


def encode_png(array: np.ndarray, *, filter_type: int = 0, compress_level: int = 6) -> bytes:
    """PNG bytes for a (H, W) or (H, W, 3) uint8/uint16 array (greyscale or RGB, 8 or 16 bits per sample)."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"encode_png needs a (H, W) or (H, W, 3) uint8/uint16 array, got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    planes = 1 if array.ndim == 2 else 3
    bitdepth = 8 * array.dtype.itemsize
    samples = array.astype(">u2") if bitdepth == 16 else array  # PNG stores samples big-endian
    raw = np.frombuffer(np.ascontiguousarray(samples).tobytes(), dtype=np.uint8).reshape(height, -1)
    scanlines = _filter_scanlines(raw, planes * bitdepth // 8, filter_type)
    colour_type = 0 if planes == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, bitdepth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), compress_level)) + _chunk(b"IEND", b""))


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write a file via a temporary sibling + rename, so an interruption never leaves a truncated file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_png(path: str | Path, array: np.ndarray, *, filter_type: int = 0) -> None:
    """Write ``array`` with :func:`encode_png` (atomically)."""
    atomic_write_bytes(path, encode_png(array, filter_type=filter_type))


def write_image(path: str | Path, image: np.ndarray | Image.Image) -> None:
    """Write an 8-bit RGB or greyscale PNG with Pillow (atomically)."""
    import io

    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
