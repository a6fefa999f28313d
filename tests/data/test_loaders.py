"""Torch loaders: documented batch dicts, seeded independent of workers, sharded per rank."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from igldt.config import load_config
from igldt.data import DataError, make_demo_dataset, read_split_file
from igldt.data.loaders import EvalSet, build_train_loaders, build_val_set, train_datasets

SMALL = dict(n_labelled_train=2, n_unlabelled_train=6, n_val=2, size=(48, 64), video_frames=0)


# Not conftest's session datasets: the counts and sizes asserted below (2 labelled repeated to the 6
# unlabelled, 48x64 images cropped to 32x40) are this module's own.
@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "d", **SMALL)


def cfg(root: Path, **data):
    base = dict(dataset="demo", root=str(root), fraction=0.25, crop=[32, 40], workers=0)
    base.update(data)
    return load_config(None, data=base, train=dict(batch_size=2, seed=0))


def test_batches_have_documented_keys(demo_root):
    lab, unl = build_train_loaders(cfg(demo_root, strong=True, cutmix=True))
    assert len(lab.dataset) == len(unl.dataset) == 6  # 2 labelled repeated to the 6 unlabelled
    assert len(lab) == len(unl) == 3
    b = next(iter(lab))
    assert set(b) == {"image", "mask"}
    assert b["image"].shape == (2, 3, 32, 40) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (2, 32, 40) and b["mask"].dtype == torch.int64
    assert set(torch.unique(b["mask"]).tolist()) <= set(range(7)) | {255}
    u = next(iter(unl))
    assert set(u) == {"image", "image_s", "valid", "box"}
    assert u["image"].shape == u["image_s"].shape == (2, 3, 32, 40)
    assert u["valid"].dtype == torch.bool and u["box"].shape == (2, 32, 40)
    assert any(not torch.equal(x["image"], x["image_s"]) for x in unl)  # the strong view perturbs
    plain = build_train_loaders(cfg(demo_root))[1]
    assert set(next(iter(plain))) == {"image", "valid"}


def _all(loader, epoch):
    loader.set_epoch(epoch)
    return [b for b in loader]


def test_same_batches_for_any_worker_count_and_new_ones_per_epoch(demo_root):
    a = build_train_loaders(cfg(demo_root, strong=True, workers=0))[1]
    b = build_train_loaders(cfg(demo_root, strong=True, workers=2))[1]
    ea, eb = _all(a, 1), _all(b, 1)
    for x, y in zip(ea, eb):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["image_s"], y["image_s"])
    e2 = _all(a, 2)
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(ea, e2))
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(ea, _all(a, 1)))


def test_ranks_shard_one_order(demo_root):
    c = cfg(demo_root)
    r0, _ = build_train_loaders(c, rank=0, world=2)
    r1, _ = build_train_loaders(c, rank=1, world=2)
    i0, i1 = list(r0.sampler), list(r1.sampler)
    assert len(i0) == len(i1) == 3 and sorted(i0 + i1) == list(range(6))


def test_split_sources(demo_root, tmp_path):
    lab, unl = train_datasets(cfg(demo_root).data)
    assert (len(lab), len(unl)) == (2, 6)
    # the demo's split files equal the seeded split of the same fraction and seed
    assert sorted(lab.ids) == read_split_file(demo_root / "splits" / "labeled.txt")
    lab2, unl2 = train_datasets(cfg(demo_root, labelled_list=str(demo_root / "splits" / "labeled.txt")).data)
    assert lab2.ids == sorted(lab.ids) and sorted(unl2.ids) == sorted(unl.ids)
    (tmp_path / "u.txt").write_text("train_0001\n")
    assert train_datasets(cfg(demo_root, count=1, unlabelled_list=str(tmp_path / "u.txt")).data)[1].ids == ["train_0001"]
    sup_lab, sup_unl = train_datasets(cfg(demo_root, fraction=None).data)
    assert len(sup_lab) == 8 and sup_unl is None
    loaders = build_train_loaders(cfg(demo_root, fraction=None))
    assert loaders[1] is None and len(loaders[0].dataset) == 8
    (tmp_path / "l.txt").write_text("train_0001\n")
    with pytest.raises(DataError, match="both the labelled and unlabelled"):
        train_datasets(cfg(demo_root, labelled_list=str(tmp_path / "l.txt"), unlabelled_list=str(tmp_path / "u.txt")).data)


def test_val_set_whole_images(demo_root):
    val = build_val_set(cfg(demo_root).data)
    assert isinstance(val, EvalSet) and len(val) == 2 and len(val.classes) == 7
    s = val[0]
    assert s["image"].shape == (3, 48, 64) and s["mask"].shape == (48, 64) and s["mask"].dtype == torch.int64
    assert s["id"] == "val_0000"
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    back = (s["image"] * std + mean) * 255
    assert np.allclose(back.permute(1, 2, 0).numpy(), val.ds.load_image(0), atol=0.01)


def test_bad_labelled_data_refused(tmp_path):
    root = make_demo_dataset(tmp_path / "d", **SMALL)
    lab = read_split_file(root / "splits" / "labeled.txt")
    (root / "masks" / "train" / f"{lab[0]}.png").unlink()
    with pytest.raises(DataError, match="missing_mask"):
        build_train_loaders(cfg(root, dataset="folder", labelled_list=str(root / "splits" / "labeled.txt")))


def test_global_batch_is_shared_by_the_ranks(demo_root):
    from igldt.data.loaders import per_rank_batch
    base = dict(dataset="demo", root=str(demo_root), fraction=0.25, crop=[32, 40], workers=0)
    glob = load_config(None, data=base, train=dict(batch_size=4, seed=0, global_batch=True))
    per_gpu = load_config(None, data=base, train=dict(batch_size=4, seed=0))
    assert per_gpu.train.global_batch is False  # the default: per process, as before
    for world, each in ((1, 4), (2, 2), (4, 1)):
        lab, unl = build_train_loaders(glob, rank=world - 1, world=world)
        assert lab.batch_size == unl.batch_size == each
    assert build_train_loaders(per_gpu, rank=1, world=2)[0].batch_size == 4
    with pytest.raises(ValueError, match=r"train.batch_size=4 is the global batch .* 3 processes cannot share it"):
        build_train_loaders(glob, rank=0, world=3)
    for name, batch in (("voc-r50", 12), ("voc-r101", 12), ("cityscapes-r101", 8)):  # METHOD.md's global batch
        paper = load_config(name).train
        assert paper.global_batch is True and paper.batch_size == batch
        assert per_rank_batch(paper, 4) == batch // 4 and per_rank_batch(paper, 1) == batch
    with pytest.raises(ValueError, match="train.batch_size=12"):
        per_rank_batch(load_config("voc-r50").train, 5)


def test_labelled_pool_control_keeps_the_labelled_batches_and_draws_only_labelled_images(demo_root):
    """data.unlabelled_pool=labelled: the unlabelled stream serves the labelled images (the control for what
    unlabelled images add), at the usual length, and the labelled batches stay those of the usual run."""
    lab, unl = build_train_loaders(cfg(demo_root))
    lab_c, unl_c = build_train_loaders(cfg(demo_root, unlabelled_pool="labelled"))
    assert unl_c.dataset.ds.ids == lab_c.dataset.ds.ids != unl.dataset.ds.ids
    assert len(unl_c.dataset) == len(unl.dataset) == 6
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
               for x, y in zip(_all(lab, 1), _all(lab_c, 1)))
    assert set(next(iter(unl_c))) == {"image", "valid"}
