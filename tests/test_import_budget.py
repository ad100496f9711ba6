"""Importing any module of the device side must not pull torch or any server-side package.

The modules are found in the packages themselves (every module of ``device``, ``fleet``,
``firmware_bridge``, ``resilience`` and the torch-free ``scoring``), so a new module is checked
the day it is added. The static layering is ``lint-imports``' job (pyproject's
``[tool.importlinter]``); this checks what an import really loads, lazy imports in module code included.
"""

import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOTS = ("device", "fleet", "firmware_bridge", "resilience", "scoring")
SERVER_SIDE = {"torch", "torchvision", "server_train", "export", "calibration", "segment_anything", "tensorrt"}
# Import names of optional dependencies -> the extra that installs them. A module may be skipped
# only when one of these is missing, and the skip names it.
OPTIONAL = {
    "paho": "device",
    "serial": "device",
    "cobs": "device",
    "cryptography": "device",
    "jsonschema": "device",
    "tensorrt": "jetson",
    "pycuda": "jetson",
}


def _package_dir(root: str) -> Path:
    spec = importlib.util.find_spec(root)  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, root
    return Path(next(iter(spec.submodule_search_locations)))


def _modules(name: str, path: Path) -> list[str]:
    """``name`` and every module below it, from the files (like ``pkgutil.walk_packages``, but
    without importing the packages into this process). ``__main__`` modules run a program when
    imported and are left out; they import only their package, which is checked."""
    found = [name]
    for info in pkgutil.iter_modules([str(path)]):
        if info.name == "__main__":
            continue
        child = f"{name}.{info.name}"
        found += _modules(child, path / info.name) if info.ispkg else [child]
    return found


MODULES = [m for root in ROOTS for m in _modules(root, _package_dir(root))]


def test_module_list_covers_every_source_file() -> None:
    """Every .py file of the packages is one of the checked modules (no folder without an
    ``__init__.py`` hides modules from the walk)."""
    files = set()
    for root in ROOTS:
        base = _package_dir(root)
        for path in base.rglob("*.py"):
            parts = path.relative_to(base.parent).with_suffix("").parts
            if parts[-1] != "__main__":
                files.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert files == set(MODULES)
    assert {"device.app.runtime", "device.cli", "fleet.consumer", "firmware_bridge.simulator"} <= files


_PROBE = """
import importlib, json, sys
try:
    importlib.import_module(sys.argv[1])
except ModuleNotFoundError as exc:
    if (exc.name or "").split(".")[0] not in json.loads(sys.argv[3]):
        raise
    print(json.dumps({"missing": exc.name.split(".")[0]}))
    raise SystemExit(0)
bad = json.loads(sys.argv[2])
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in bad)}))
"""


@pytest.mark.parametrize("module", MODULES)
def test_device_side_imports_no_torch_or_server(module: str) -> None:
    argv = [sys.executable, "-c", _PROBE, module, json.dumps(sorted(SERVER_SIDE)), json.dumps(sorted(OPTIONAL))]
    run = subprocess.run(argv, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    if "missing" in out:
        pytest.skip(f"{module} needs the '{OPTIONAL[out['missing']]}' extra ({out['missing']} is not installed)")
    assert out["loaded"] == []


def test_cli_parser_builds_without_importing_torch() -> None:
    """Building the full parser (server subcommands included) stays torch-free."""
    code = (
        "import sys, json\n"
        "from device.cli import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
