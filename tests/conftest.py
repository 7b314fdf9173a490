import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
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

