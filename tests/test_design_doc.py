"""docs/design.md's layout matches the code: every package and every signal is in it."""
import re

from conftest import ROOT
from ortprof.signals import REPORT_ORDER, SIGNALS

DESIGN = (ROOT / "docs" / "design.md").read_text()
LAYOUT = DESIGN[DESIGN.index("## Layout"):DESIGN.index("## Adding a signal")]


def test_every_package_is_in_the_layout():
    packages = sorted(path.name for path in (ROOT / "ortprof").iterdir()
                      if path.is_dir() and (path / "__init__.py").exists())
    missing = [name for name in packages if not re.search(rf"\b{name}/", LAYOUT)]
    assert not missing, f"docs/design.md's layout does not name: {missing}"


def test_every_signal_and_the_report_order_are_in_the_layout():
    missing = [signal.name for signal in SIGNALS if not re.search(rf"\b{signal.name}\b", LAYOUT)]
    assert not missing, f"docs/design.md's layout does not name the signals {missing}"
    assert "REPORT_ORDER" in LAYOUT and set(REPORT_ORDER) <= {signal.name for signal in SIGNALS}


def test_the_phases_the_doc_names_are_the_captures_phases():
    from ortprof.signals.base import Capture
    named = set(re.findall(r"`(\w+)(?:\(pid\))?`", LAYOUT))
    phases = {name for name in vars(Capture) if not name.startswith("_") and name not in ("processes", "perf_options")}
    assert phases <= named, f"phases missing from docs/design.md: {phases - named}"
