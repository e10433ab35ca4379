"""Decoders and the minimal PNG encoder (16-bit SYNTHIA labels via pypng, files from a different encoder)."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from data_trees import synthia_label, truncate
from PIL import Image

from data.io import DatasetError, encode_png, read_image, read_label, read_synthia_label


@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4])
def test_16bit_three_channel_label_decodes_exactly_for_every_filter(tmp_path, filter_type):
    rng = np.random.default_rng(filter_type)
    label = rng.integers(0, 65536, (9, 13, 3), dtype=np.uint16)  # high bytes set: catches 8-bit truncation
    label[..., 0] = rng.integers(0, 23, (9, 13))
    path = tmp_path / "label.png"
    path.write_bytes(encode_png(label, filter_type=filter_type))
    ids = read_synthia_label(path)
    assert ids.dtype == np.uint16 and ids.shape == (9, 13)
    np.testing.assert_array_equal(ids, label[..., 0])


def test_pillow_would_lose_the_ids_which_is_why_pypng_is_used(tmp_path):
    path = tmp_path / "label.png"
    path.write_bytes(encode_png(synthia_label()))
    with Image.open(path) as img:  # Pillow keeps only the high byte of 16-bit RGB samples
        pillow = np.asarray(img.convert("RGB"))[..., 0]
    assert not np.array_equal(pillow, synthia_label()[..., 0])
    np.testing.assert_array_equal(read_synthia_label(path), synthia_label()[..., 0])


def test_encoder_output_is_a_valid_png_for_pillow_too():
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    for array in (rgb, grey):
        for filter_type in range(5):
            with Image.open(io.BytesIO(encode_png(array, filter_type=filter_type))) as img:
                np.testing.assert_array_equal(np.asarray(img), array)


def test_encoder_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="uint8/uint16"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="filter_type"):
        encode_png(np.zeros((4, 4), dtype=np.uint8), filter_type=5)


def test_8bit_label_where_16bit_expected_is_a_clear_error(tmp_path):
    path = tmp_path / "0000000.png"
    Image.fromarray(np.full((4, 6), 3, dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"0000000\.png: expected a 16-bit SYNTHIA label PNG.*8-bit"):
        read_synthia_label(path)


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    label = tmp_path / "label16.png"
    label.write_bytes(encode_png(synthia_label()))
    truncate(label)
    with pytest.raises(DatasetError, match="label16.png: .*corrupt or truncated"):
        read_synthia_label(label)
    corrupt = tmp_path / "corrupt16.png"
    data = bytearray(encode_png(synthia_label()))
    data[40:48] = b"\x00" * 8  # inside the IDAT chunk: CRC mismatch
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="corrupt16.png"):
        read_synthia_label(corrupt)
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    truncate(image, 0.6)
    with pytest.raises(DatasetError, match="image.png: cannot decode"):
        read_image(image)
    with pytest.raises(DatasetError, match="missing label file"):
        read_label(tmp_path / "absent.png")


def test_read_label_rejects_colour_label_images(tmp_path):
    path = tmp_path / "color.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match="color.png: expected a single-channel 8-bit label-id PNG"):
        read_label(path)


def test_zlib_payload_of_the_encoder_uses_the_requested_filter():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    payload = encode_png(array, filter_type=2)
    start = payload.index(b"IDAT") + 4
    length = int.from_bytes(payload[start - 8:start - 4], "big")
    raw = zlib.decompress(payload[start:start + length])
    assert [raw[i * 5] for i in range(3)] == [2, 2, 2]  # one filter byte per scanline
    assert list(raw[6:10]) == [4, 4, 4, 4]  # row 1 minus row 0 (the Up filter)
