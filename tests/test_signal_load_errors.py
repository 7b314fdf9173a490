"""A signal whose files cannot be read: its figures are left out with a note saying which and why,
and the other signals still load (no traceback, no silent gap)."""
import shutil

from conftest import FIXTURES
from ortprof.analysis.report import build_report
from ortprof.recording.rundir import RunDirectory


def test_unreadable_signal_files_are_notes_and_the_rest_loads(tmp_path):
    run = tmp_path / "run"
    (run / "hook").mkdir(parents=True)
    shutil.copy(FIXTURES / "run-manifest-demo-before-typed.json", run / "run.json")
    (run / "hook" / "hook-1.jsonl").write_bytes(b"\xff\xfe not text\n")   # a hook file that is not UTF-8
    (run / "threads.csv").mkdir()                                       # a directory where a file should be
    _, report = build_report(RunDirectory(run), samples=[])
    notes = "\n".join(report.notes)
    assert "the runs signal's files could not be read (UnicodeDecodeError" in notes
    assert "the threads signal's files could not be read (IsADirectoryError" in notes
    assert report.empty_sections["sessions"].startswith("its files could not be read (UnicodeDecodeError")
    # the signals that could load did: the cgroup figures come from run.json
    assert report.cgroup.throttled_periods == 0
    assert report.sessions == [] and report.threads == []
