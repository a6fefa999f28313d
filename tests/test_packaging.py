"""The distribution installs everything under `igldt`: no bare cli/runtime/export/models in site-packages."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BARE = ("cli", "runtime", "export", "models")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the test venv already has setuptools, and CI needs no extra download.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, cwd=out)
    (whl,) = out.glob("igldt-*.whl")
    return whl


def test_wheel_has_only_the_igldt_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert not tops & set(BARE), f"bare top-level packages in the wheel: {tops & set(BARE)}"
    assert {t for t in tops if not t.endswith(".dist-info")} == {"igldt"}
    for mod in ("igldt/cli/main.py", "igldt/runtime/__init__.py", "igldt/export/__init__.py",
                "igldt/models/__init__.py", "igldt/presets/default.yaml", "igldt/presets/demo.yaml"):
        assert mod in names, f"{mod} missing from the wheel"
    # every Python folder in the source tree made it in (a new subpackage must be listed in pyproject)
    for folder, pkg in (("igldt", "igldt"), ("cli", "igldt/cli"), ("runtime", "igldt/runtime"),
                        ("export", "igldt/export"), ("models", "igldt/models")):
        for src in (REPO / folder).rglob("*.py"):
            rel = src.relative_to(REPO / folder).as_posix()
            assert f"{pkg}/{rel}" in names, f"{folder}/{rel} is not packaged as {pkg}/{rel}"


def test_built_wheel_imports_and_runs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    code = ("import igldt, igldt.runtime, igldt.config;"
            "assert igldt.__file__.startswith(%r), igldt.__file__;"
            "print(igldt.config.load_config('demo').data.dataset)") % str(target)
    # run from tmp_path with only the wheel's files (and the venv's dependencies) importable
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "demo"
    assert not (target / "cli").exists() and not (target / "runtime").exists()
