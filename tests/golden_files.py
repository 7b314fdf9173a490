"""Golden files: exporter output on fixed fixture profiles, compared byte for byte.

Regenerate after an intended change with ORTPROF_UPDATE_GOLDEN=1 and review the diff."""
import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name, text):
    path = GOLDEN / name
    if os.environ.get("ORTPROF_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with ORTPROF_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text()
    assert text == expected, f"{name} differs from its golden file (ORTPROF_UPDATE_GOLDEN=1 to accept)"
