"""Data layer: dataset formats, split protocol, validation, transforms and the demo dataset.

Torch-free on import (numpy + OpenCV); the torch datasets and loaders live in
`igldt.data.loaders`, imported explicitly by the training side.
"""
from .check import Problem, assert_valid, check_dataset, format_report
from .base import IGNORE, Item, SegDataset
from .datasets import build_dataset, detect_format
from .errors import DataError
from .folder import FolderDataset, ImageFolder, read_classes_yaml, write_classes_yaml
from .public import CamVidDataset, CityscapesDataset, VOCDataset
from .demo import ensure_demo_dataset, make_demo_dataset
from .splits import make_split, parse_fraction, read_split_file, select, write_split

__all__ = [
    "IGNORE", "DataError", "Item", "SegDataset", "VOCDataset", "CityscapesDataset", "CamVidDataset",
    "FolderDataset", "ImageFolder", "build_dataset", "detect_format", "read_classes_yaml", "write_classes_yaml",
    "read_split_file", "make_split", "parse_fraction", "write_split", "select",
    "Problem", "check_dataset", "format_report", "assert_valid", "make_demo_dataset", "ensure_demo_dataset",
]
