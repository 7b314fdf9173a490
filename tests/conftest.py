import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD_ORT_PYTHON = ROOT / ".venv" / "ort-1.15.1" / "bin" / "python"


@pytest.fixture(scope="session")
def ortprof_bin():
    return str(VENV_BIN / "ortprof")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("ORTPROF_RUNS_DIR", str(path))
    return path


def shared_fixture(name):
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.fail(f"shared fixture {path} missing: tests run from a checkout with ../shared beside it")
    return path
