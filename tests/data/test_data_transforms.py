"""Paired transforms: alignment of image and label, no label interpolation, exact normalisation."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from data.transforms import CAFFE_MEAN_BGR, EvalPreset, TrainPreset, denormalize, normalize

W, H = 200, 100


def coordinate_pair():
    """Image whose red channel is the column x and green channel 2*y; label = the column x (0..199)."""
    xs, ys = np.meshgrid(np.arange(W), np.arange(H))
    image = np.stack([xs, 2 * ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    return image, xs.astype(np.uint8)


def _columns(image_tensor, kind="caffe"):
    return denormalize(image_tensor, kind)[..., 0].astype(int)


def test_flip_and_crop_keep_image_and_label_exactly_aligned():
    preset = TrainPreset(size=(W, H), hflip_prob=1.0, blur_prob=0.0, crop_size=(64, 32))
    image, label = coordinate_pair()
    random.seed(0)
    for _ in range(5):
        img, lab = preset(image, label)
        assert img.shape == (3, 32, 64) and lab.shape == (32, 64)
        np.testing.assert_array_equal(_columns(img), lab.numpy())  # x read from the image == x in the label
        assert (lab[:, 0] > lab[:, -1]).all()  # flipped: columns decrease left to right


def test_random_scale_keeps_alignment_and_pads_label_with_ignore():
    preset = TrainPreset(size=(W, H), hflip_prob=0.5, blur_prob=0.0, scale_range=(0.5, 1.5), crop_size=(150, 80))
    image, label = coordinate_pair()
    random.seed(1)
    saw_padding = False
    for _ in range(8):
        img, lab = preset(image, label)
        assert lab.shape == (80, 150)
        lab = lab.numpy()
        valid = lab != 255
        saw_padding |= bool((~valid).any())
        x_from_image = _columns(img)[valid]
        # bicubic on a linear ramp ≈ the ramp; nearest on the label: differ by at most a pixel or so of scale
        assert np.median(np.abs(x_from_image - lab[valid])) <= 1
        assert np.percentile(np.abs(x_from_image - lab[valid]), 99) <= 3
    assert saw_padding  # scale < 0.8 happened: the crop was padded with 255


def test_labels_are_never_interpolated():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([3, 7, 200], dtype=np.uint8), size=(H, W))
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    random.seed(2)
    presets = [TrainPreset(size=(77, 41), scale_range=(0.6, 1.7), crop_size=(50, 30)),
               EvalPreset(size=(64, 32), label_size=(123, 61))]
    for preset in presets:
        for _ in range(4):
            _, lab = preset(image, label)
            assert set(np.unique(lab.numpy())) <= {3, 7, 200, 255}


def test_eval_protocols_full_and_seed():
    image, label = coordinate_pair()
    img, lab = EvalPreset(size=(100, 50))(image, label)
    assert img.shape == (3, 50, 100) and lab.shape == (H, W)  # full: native label
    np.testing.assert_array_equal(lab.numpy(), label)
    _, lab = EvalPreset(size=(100, 50), label_size=(100, 50))(image, label)
    assert lab.shape == (50, 100)  # seed: nearest to the input size (PIL samples pixel centres: 1, 3, 5, ...)
    np.testing.assert_array_equal(lab.numpy(), label[1::2, 1::2])


def test_blur_probability_and_seeded_determinism():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = np.zeros((H, W), dtype=np.uint8)
    sharp = EvalPreset(size=(W, H))(image, label)[0]
    preset = TrainPreset(size=(W, H), hflip_prob=0.0, blur_prob=1.0)
    random.seed(5)
    first = [preset(image, label)[0] for _ in range(3)]
    random.seed(5)
    second = [preset(image, label)[0] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], sharp) and first[0].std() < sharp.std()  # blurred: smoother
    unblurred = TrainPreset(size=(W, H), hflip_prob=0.0, blur_prob=0.0)(image, label)[0]
    assert torch.equal(unblurred, sharp)


def test_caffe_and_imagenet_normalisation_constants():
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)
    caffe = normalize(pixel, "caffe")[:, 0, 0]
    expected = torch.tensor([30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434])  # BGR order
    torch.testing.assert_close(caffe, expected, rtol=0, atol=1e-4)
    assert CAFFE_MEAN_BGR == (104.00698793, 116.66876762, 122.67891434)
    imagenet = normalize(pixel, "imagenet")[:, 0, 0]
    expected = torch.tensor([(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225])
    torch.testing.assert_close(imagenet, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["caffe", "imagenet"])
def test_denormalize_inverts_normalize(kind):
    image = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    tensor = normalize(image, kind)
    np.testing.assert_array_equal(denormalize(tensor, kind), image)
    batch = denormalize(torch.stack([tensor, tensor]), kind)
    assert batch.shape == (2, 6, 5, 3) and batch.dtype == np.uint8


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="normalization = 'bgr'.*caffe \\| imagenet"):
        TrainPreset(size=(8, 8), normalization="bgr")
    with pytest.raises(ValueError, match="size = \\(0, 8\\)"):
        TrainPreset(size=(0, 8))
    with pytest.raises(ValueError, match="scale_range"):
        TrainPreset(size=(8, 8), scale_range=(1.5, 0.5))
    with pytest.raises(TypeError):
        TrainPreset((8, 8))  # keyword-only
