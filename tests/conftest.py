import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CAMVID = Path(os.environ.get("IGLDT_CAMVID", REPO.parent / "shared" / "data" / "camvid"))


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder beside the checkout: skipped where absent, a failure in CI."""
    if not (CAMVID / "train").is_dir():
        reason = f"CamVid not found at {CAMVID} (set IGLDT_CAMVID or place ../shared beside the checkout)"
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
