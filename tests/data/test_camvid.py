"""The real CamVid folder beside the checkout (../shared/data/camvid)."""
from __future__ import annotations

import numpy as np
import pytest

from igldt.data import CamVidDataset, build_dataset, check_dataset, make_split

pytestmark = pytest.mark.camvid


def test_real_camvid(camvid_root):
    train, val = build_dataset("camvid", camvid_root, "train"), CamVidDataset(camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    assert len(train.classes) == 11 and train.ignore_index == 11
    assert not set(train.ids) & set(val.ids)
    assert all(it.mask is not None for it in train.items + val.items)
    seen = set()
    for ds in (train, val):
        for i in range(0, len(ds), 25):
            img, raw, m = ds.load_image(i), ds.raw_mask(i), ds.load_mask(i)
            assert img.shape == (360, 480, 3) and m.shape == (360, 480)
            assert set(np.unique(m).tolist()) <= set(range(11)) | {255}
            assert np.array_equal(m == 255, raw == 11)  # exactly the unlabelled pixels are ignored
            seen |= set(np.unique(m).tolist())
    assert 255 in seen and len(seen - {255}) >= 9
    assert len(make_split(train.ids, fraction="1/8", seed=0)[0]) == 46
    assert check_dataset(val) == []
