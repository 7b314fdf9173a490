"""The shipped report schema is strict enough to catch drift (test_run_manifest.py checks that both
shipped schemas are current with their dataclasses)."""
import copy
import pytest

from conftest import FIXTURES
from ortprof.analysis.report import report_from_perf_script
from schema_check import assert_valid_report


@pytest.fixture(scope="module")
def fixture_report():
    return report_from_perf_script(FIXTURES / "symbols-1.31.1-default.perf-script.txt")


def test_fixture_report_is_valid(fixture_report):
    assert_valid_report(fixture_report)


@pytest.mark.parametrize("mutate", [
    lambda r: r.pop("futex"),                                     # a contract field gone
    lambda r: r["threads"][0].update(role="worker"),              # a role that does not exist
    lambda r: r["totals"].update(spin_pct="41%"),                 # a number as text
    lambda r: r["threads"][0].update(extra=1),                    # an undeclared key
    lambda r: r.update(schema="ortprof.report/2"),
])
def test_schema_rejects_drift(fixture_report, mutate):
    broken = copy.deepcopy(fixture_report)
    mutate(broken)
    with pytest.raises(AssertionError):
        assert_valid_report(broken)
