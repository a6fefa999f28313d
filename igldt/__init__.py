"""igldt: semi-supervised semantic segmentation with IGL-DT, from training to the edge.

Kept import-light on purpose: `igldt.runtime` runs on devices without torch.
"""
__version__ = "0.1.0"
