import os
import time
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


# Built once for the session and shared by several modules: read-only. A test that changes files
# copies them first (shutil.copytree), a test that trains a model builds its own.

@pytest.fixture(scope="session")
def demo_data_timed(tmp_path_factory) -> tuple[Path, float]:
    """The default demo dataset (64 train / 24 val images at 96x128, a 48-frame demo.mp4) and the
    seconds its generation took (tests/data/test_demo.py holds it to "a few seconds")."""
    from igldt.data import make_demo_dataset
    t = time.perf_counter()
    root = make_demo_dataset(tmp_path_factory.mktemp("demo_data") / "demo")
    return root, time.perf_counter() - t


@pytest.fixture(scope="session")
def demo_data(demo_data_timed) -> Path:
    """The default demo dataset: the students trained in tests/export/test_export.py learn from it."""
    return demo_data_timed[0]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A demo dataset small enough for real training runs through the CLI in seconds: 4 labelled and
    4 unlabelled train images, 2 val images, 32x48, no video (tests/train/test_stages.py, test_kill.py)."""
    from igldt.data import make_demo_dataset
    return make_demo_dataset(tmp_path_factory.mktemp("tiny_demo") / "data", n_labelled_train=4,
                             n_unlabelled_train=4, n_val=2, size=(32, 48), video_frames=0)


@pytest.fixture(scope="session")
def r18():
    """An untrained DeepLabV3+ ResNet-18 for 3 classes (torch seed 0), in eval mode; never trained or
    changed by a test (tests/test_checkpoint.py, tests/test_evaluate.py)."""
    import torch
    from igldt.models import build_segmenter
    with torch.random.fork_rng(devices=[]):  # the seed stays here, not in whichever test came first
        torch.manual_seed(0)
        return build_segmenter("resnet18", 3).eval()


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
