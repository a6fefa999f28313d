"""What every module of `igldt.data` shares, at the bottom of its imports (no circle)."""

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad or missing data; the message names the path and what to do about it."""
