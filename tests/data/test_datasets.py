"""Each dataset format read from tiny fixtures written here (no downloads)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from igldt.data import (IGNORE, CamVidDataset, CityscapesDataset, DataError, FolderDataset, ImageFolder,
                        VOCDataset, build_dataset, detect_format)
from igldt.data.datasets import CITYSCAPES_ID_TO_TRAIN, voc_palette


def img(path: Path, h: int = 6, w: int = 8, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((h, w, 3), value, np.uint8)
    a[0, 0] = (10, 20, 30)  # BGR on disk
    assert cv2.imwrite(str(path), a)


def mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(values, np.uint8))


# -- VOC ------------------------------------------------------------------------------------------

def make_voc(root: Path) -> None:
    for i in ("2007_000032", "2007_000039", "2008_000008"):
        img(root / "JPEGImages" / f"{i}.jpg")
    m = np.zeros((6, 8), np.uint8)
    m[:2] = 15
    m[5] = 255
    mask(root / "SegmentationClassAug" / "2007_000032.png", m)
    mask(root / "SegmentationClassAug" / "2008_000008.png", np.full((6, 8), 3))
    # the plain VOC mask of 000032 differs: the Aug one must win
    mask(root / "SegmentationClass" / "2007_000032.png", np.full((6, 8), 7))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n2007_000039\n")
    (sets / "val.txt").write_text("2008_000008\n")
    (root / "ImageSets" / "SegmentationAug").mkdir()
    (root / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
        "/JPEGImages/2008_000008.jpg /SegmentationClassAug/2008_000008.png\n")


def test_voc_prefers_aug_masks_and_reads_lists(tmp_path):
    make_voc(tmp_path)
    ds = VOCDataset(tmp_path, "train")
    assert ds.ids == ["2007_000032", "2007_000039"]
    assert len(ds.classes) == 21 and ds.ignore_index == 255 and ds.palette.shape == (21, 3)
    assert ds.items[0].mask.parent.name == "SegmentationClassAug"
    m = ds.load_mask(0)
    assert m[0, 0] == 15 and m[5, 0] == IGNORE and m[3, 3] == 0
    assert ds.items[1].mask is None  # no mask anywhere: kept, reported by check_dataset
    assert ds.load_image(0).shape == (6, 8, 3)
    aug = VOCDataset(tmp_path, "train_aug")
    assert aug.ids == ["2007_000032", "2008_000008"]
    assert VOCDataset(tmp_path.parent / tmp_path.name, "val").load_mask(0).max() == 3


def test_voc_palette_png_masks_are_mapped_back_to_ids(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    make_voc(tmp_path)
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 2:5] = 12
    ids[4] = 255  # VOC boundary colour (224, 224, 192) in the standard palette
    im = Image.fromarray(ids, mode="P")
    pal = voc_palette(256)
    im.putpalette(pal.ravel().tolist())
    (tmp_path / "SegmentationClassAug" / "2007_000032.png").unlink()
    im.save(tmp_path / "SegmentationClass" / "2007_000032.png")
    ds = VOCDataset(tmp_path, "train")
    assert np.array_equal(ds.load_mask(0), ids)


def test_voc_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        VOCDataset(tmp_path / "nope", "train")
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    with pytest.raises(DataError, match="split 'train_aug' not found"):
        VOCDataset(tmp_path, "train_aug")


# -- Cityscapes -----------------------------------------------------------------------------------

def test_cityscapes_label_ids_converted_to_train_ids(tmp_path):
    for city, n in (("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")):
        img(tmp_path / "leftImg8bit" / "train" / city / f"{n}_leftImg8bit.png")
    ids = np.array([[7, 8, 11, 26, 33, 0, 1, 4]] * 6, np.uint8)
    mask(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", ids)
    trainids = np.full((6, 8), 5, np.uint8)
    trainids[0, 0] = 255
    mask(tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelTrainIds.png", trainids)
    mask(tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png", np.zeros((6, 8)))
    ds = CityscapesDataset(tmp_path, "train")
    assert ds.ids == ["aachen_000000_000019", "bochum_000000_000313"]
    assert len(ds.classes) == 19
    row = ds.load_mask(0)[0].tolist()
    assert row == [0, 1, 2, 13, 18, 255, 255, 255]
    assert all(CITYSCAPES_ID_TO_TRAIN[k] == v for k, v in zip((7, 8, 11, 26, 33), row))
    assert ds.raw_mask(0)[0, 4] == 33  # raw stays on-disk labelIds, for checks
    assert ds.valid_values(0)[33] and not ds.valid_values(0)[34]
    m1 = ds.load_mask(1)  # labelTrainIds preferred over labelIds
    assert m1[0, 0] == 255 and m1[1, 1] == 5
    with pytest.raises(DataError, match="split folder"):
        CityscapesDataset(tmp_path, "val")


# -- CamVid ---------------------------------------------------------------------------------------

def make_camvid(root: Path) -> None:
    for split, names in (("train", ["0001TP_006690", "0001TP_006720"]), ("val", ["0016E5_07959"])):
        for n in names:
            img(root / split / f"{n}.png")
            m = np.tile(np.arange(8, dtype=np.uint8) + 4, (6, 1))  # 4..11
            mask(root / f"{split}annot" / f"{n}.png", m)


def test_camvid_ignore_11_remapped(tmp_path):
    make_camvid(tmp_path)
    ds = CamVidDataset(tmp_path, "train")
    assert len(ds) == 2 and len(ds.classes) == 11 and ds.classes[0] == "sky"
    assert ds.palette[3].tolist() == [128, 64, 128]
    assert ds.raw_mask(0)[0, 7] == 11
    assert ds.load_mask(0)[0].tolist() == [4, 5, 6, 7, 8, 9, 10, 255]
    assert ds.load_image(0)[0, 0].tolist() == [30, 20, 10]  # RGB from BGR on disk
    assert len(CamVidDataset(tmp_path, "val")) == 1
    with pytest.raises(DataError, match="test"):
        CamVidDataset(tmp_path, "test")


# -- folder format --------------------------------------------------------------------------------

CLASSES_YAML = """classes:
  - {name: background, color: [0, 0, 0]}
  - {name: crack, color: [255, 0, 0]}
  - {name: rust, color: [0, 255, 0]}
ignore_index: 200
"""


def test_folder_split_subfolders_yaml_and_colour_masks(tmp_path):
    (tmp_path / "classes.yaml").write_text(CLASSES_YAML)
    for split in ("train", "val"):
        img(tmp_path / "images" / split / f"{split}_a.jpg")
        mask(tmp_path / "masks" / split / f"{split}_a.png", np.array([[0, 1, 2, 200, 0, 0, 0, 0]] * 6))
    img(tmp_path / "images" / "train" / "train_b.png")  # no mask: unlabelled
    ds = FolderDataset(tmp_path, "train")
    assert ds.classes == ["background", "crack", "rust"] and ds.ignore_index == 200
    assert ds.palette.tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    assert ds.ids == ["train_a", "train_b"] and ds.items[1].mask is None
    assert ds.load_mask(0)[0, :4].tolist() == [0, 1, 2, 255]
    # a colour-coded mask (RGB of the class colours) reads the same
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[:, 1] = (0, 0, 255)  # crack, BGR on disk
    cv2.imwrite(str(tmp_path / "masks" / "val" / "val_a.png"), colour)
    v = FolderDataset(tmp_path, "val")
    assert v.load_mask(0)[0, :3].tolist() == [0, 1, 0]
    assert build_dataset("folder", tmp_path, "val").ids == ["val_a"]
    assert detect_format(tmp_path) == "folder"


def test_folder_flat_with_list_files_and_yaml_forms(tmp_path):
    (tmp_path / "classes.yaml").write_text("classes: {road: [128, 64, 128], car: [0, 0, 142]}\n")
    for n in ("a", "b", "c"):
        img(tmp_path / "images" / f"{n}.png")
        mask(tmp_path / "masks" / f"{n}.png", np.ones((6, 8)))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("images/c.png masks/c.png\n")
    assert FolderDataset(tmp_path, "train").ids == ["a", "b", "c"]
    ds = FolderDataset(tmp_path, "val")
    assert ds.ids == ["c"] and ds.ignore_index == 255 and ds.classes == ["road", "car"]
    with pytest.raises(DataError, match="split 'test' not found"):
        FolderDataset(tmp_path, "test")
    (tmp_path / "splits" / "bad.txt").write_text("zzz\n")
    with pytest.raises(DataError, match="1 ids have no image"):
        FolderDataset(tmp_path, "bad")


@pytest.mark.parametrize("text, match", [
    ("classes: [a, b]\nignore_index: 1\n", "ignore_index"),
    ("classes: [{name: a, color: [1, 2]}]\n", "colour of class 'a'"),
    ("classes: []\n", "non-empty"),
    ("classes: [a, a]\n", "duplicate"),
    ("classes: [a\n", "not valid YAML"),
])
def test_folder_bad_classes_yaml(tmp_path, text, match):
    (tmp_path / "classes.yaml").write_text(text)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=match):
        FolderDataset(tmp_path, "train")


def test_folder_missing_pieces(tmp_path):
    with pytest.raises(DataError, match="classes.yaml not found"):
        FolderDataset(tmp_path, "train")
    (tmp_path / "classes.yaml").write_text("classes: [a, b]\n")
    with pytest.raises(DataError, match="images folder"):
        FolderDataset(tmp_path, "train")
    # default colours come from the VOC colour map
    (tmp_path / "images").mkdir()
    img(tmp_path / "images" / "x.png")
    assert FolderDataset(tmp_path, "train").palette.tolist() == voc_palette(2).tolist()


def test_image_folder_and_build_dataset_errors(tmp_path):
    img(tmp_path / "frames" / "a.jpg")
    img(tmp_path / "frames" / "sub" / "b.png")
    (tmp_path / "frames" / "notes.txt").write_text("x")
    ds = ImageFolder(tmp_path / "frames")
    assert ds.ids == ["a", "sub/b"] and all(it.mask is None for it in ds.items)
    assert ds.load_image(1).shape == (6, 8, 3)
    with pytest.raises(DataError, match="unknown dataset 'coco'"):
        build_dataset("coco", tmp_path)
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match="no images"):
        (tmp_path / "empty").mkdir()
        ImageFolder(tmp_path / "empty")


def test_unreadable_files_raise_dataerror_naming_file(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "train" / "0001TP_006690.png").write_bytes(b"not a png")
    ds = CamVidDataset(tmp_path, "train")
    with pytest.raises(DataError, match="0001TP_006690.png"):
        ds.load_image(0)


def test_missing_public_dataset_root_says_where_to_get_it(tmp_path):
    """The presets' default roots (data/camvid ...) are where a user puts the download: a first run without
    it names the source and the layout doc in one line."""
    from igldt.config import load_config

    for preset, fmt in (("camvid-cpu", "camvid"), ("voc-r50", "voc"), ("cityscapes-r101", "cityscapes")):
        root = tmp_path / load_config(preset).data.root
        with pytest.raises(DataError) as e:
            build_dataset(fmt, root, "train")
        message = str(e.value)
        assert len(message.splitlines()) == 1 and str(root) in message and "docs/data.md" in message
        assert "download" in message, message
