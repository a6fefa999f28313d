"""The distribution installs everything under `igldt`: no bare cli/runtime/export/models in site-packages."""
import subprocess
import sys
import textwrap
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


def test_core_install_is_the_torch_free_runtime():
    """The dependency metadata, read strictly: the core is the runtime; torch and ONNX tooling are extras."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip() for r in reqs}
    assert names(project["dependencies"]) == {"click", "numpy", "opencv-python-headless", "pyyaml", "tqdm"}
    extras = project["optional-dependencies"]
    assert {"torch", "torchvision", "timm"} <= names(extras["train"])
    assert {"onnx", "onnxscript", "onnxslim"} <= names(extras["export"]) and "igldt" in names(extras["export"])
    assert names(extras["cpu"]) == {"onnxruntime"} and "onnxruntime" not in names(extras["gpu"])
    # onnxruntime and onnxruntime-gpu overwrite each other: no extra but the two engine ones names either
    for extra, reqs in extras.items():
        if extra not in ("cpu", "gpu"):
            assert not names(reqs) & {"onnxruntime", "onnxruntime-gpu"}, extra


# What an edge box lacks: the core install plus onnxruntime, nothing from the train/export extras.
BLOCK_EXTRAS = textwrap.dedent("""
    import sys
    BLOCKED = {"torch", "torchvision", "timm", "matplotlib", "onnx", "onnxscript", "onnxslim"}
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, _Block())
""")


def test_runtime_verbs_without_the_train_and_export_extras(tmp_path):
    """`igldt infer` and `igldt evaluate --engine` run with only the core and an engine importable;
    `igldt train` and `igldt export` then say, in one line, which extra to install."""
    pytest.importorskip("onnxruntime")
    from tests.runtime.test_runtime import CLASSES, PALETTE, tiny_onnx

    from igldt.data import write_classes_yaml
    import cv2
    import numpy as np

    model = tiny_onnx(tmp_path / "tiny.onnx")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    write_classes_yaml(root / "classes.yaml", CLASSES, np.array(PALETTE))
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), rng.integers(0, 3, (40, 56), dtype=np.uint8))
    code = BLOCK_EXTRAS + textwrap.dedent(f"""
        from igldt.cli.main import cli
        for args in (["infer", {str(root / "images" / "im0.png")!r}, "--model", {str(model)!r}, "--device", "cpu",
                      "--out", {str(tmp_path / "run")!r}, "--save-masks"],
                     ["evaluate", "--engine", {str(model)!r}, "--data", {str(root)!r}, "--dataset", "folder",
                      "--split", "all", "--device", "cpu", "--out", {str(tmp_path / "eval.json")!r}]):
            cli.main(args, standalone_mode=False)
        assert not {{"torch", "onnx", "timm", "matplotlib"}} & set(sys.modules), "a training module was imported"
        print("RUNTIME OK")
    """)
    # nothing from tests/ on the path: its folders (cli, data, models, ...) would shadow top-level names
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "RUNTIME OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "run" / "masks" / "im0.png").exists() and (tmp_path / "eval.json").exists()
    (tmp_path / "student.pt").write_bytes(b"not read: the missing extra is reported first")
    for extra, args in (("train", ["train", "--stage", "supervised", "--preset", "demo", "--out", str(tmp_path / "t")]),
                        ("export", ["export", "--weights", str(tmp_path / "student.pt"), "--format", "onnx"]),
                        ("export", ["demo", "--out", str(tmp_path / "d")])):
        r = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS + f"from igldt.cli.main import cli; cli({args!r})"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        err = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(err) == 1, r.stderr
        assert f"igldt {args[0]} needs" in err[0] and f'pip install "igldt[{extra}]"' in err[0], err[0]
