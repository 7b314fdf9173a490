import signal
import sys
from pathlib import Path

import pytest

# Started in the background by a non-interactive shell (`cmd &`, nohup), the suite
# inherits SIGINT ignored, and so would every workload it starts: Python then never
# raises KeyboardInterrupt, and the Ctrl+C tests would test nothing. A handler here
# is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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



@pytest.fixture(autouse=True)
def reports_match_the_schema(monkeypatch):
    """Every report made in-process is checked against the shipped JSON Schema
    (reports made by the CLI are checked in live.report_json)."""
    from ortprof.model.report import Report
    from schema_check import assert_valid_report
    to_json = Report.to_json
    monkeypatch.setattr(Report, "to_json", lambda self: assert_valid_report(to_json(self)))
