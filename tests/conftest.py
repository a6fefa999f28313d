import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# $IGLDT_CAMVID, else data/camvid in the checkout (the presets' default root), else ../shared/data/camvid
# (where this project's CI keeps it beside the clone).
CAMVID = Path(os.environ.get("IGLDT_CAMVID") or next(
    (p for p in (REPO / "data" / "camvid", REPO.parent / "shared" / "data" / "camvid") if (p / "train").is_dir()),
    REPO / "data" / "camvid"))


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder beside the checkout: skipped where absent, a failure in CI."""
    if not (CAMVID / "train").is_dir():
        reason = f"CamVid not found at {CAMVID} (set IGLDT_CAMVID or put it in data/camvid: docs/data.md)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CAMVID


@pytest.fixture(autouse=True)
def _few_threads():
    # 2-core machines: many tests run small models; one thread avoids oversubscription.
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
