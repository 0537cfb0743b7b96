"""Image decoding helpers (cgh.data.decode): RandomResizedCrop boxes, crop-resize and the evaluation resize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cgh.data.decode import crop_resize, random_resized_crop_box, resize_center_crop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_random_resized_crop_box_properties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(5, 300)), int(rng.integers(5, 300))
        top, left, ch, cw = random_resized_crop_box(w, h, (0.2, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    # Impossible area/ratio requests fall back to the centred crop with the ratio clamped (torchvision).
    assert random_resized_crop_box(100, 10, (1.0, 1.0), (1.0, 1.0), rng) == (0, 45, 10, 10)
    assert random_resized_crop_box(40, 40, (1.0, 1.0), (2.0, 3.0), rng) == (10, 0, 20, 40)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(crop_resize(img, (2, 1, 5, 5), 5)), np.asarray(img)[2:7, 1:6])
    big = Image.new("RGB", (300, 200))
    # docs/method.md#test-transforms: Resize(256) -> 384x256, CenterCrop(224) at offsets (80, 16).
    assert resize_center_crop(big, 256, 224).size == (224, 224)
