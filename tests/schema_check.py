"""Every report and run.json the tests make is checked against the shipped JSON Schemas."""
import functools

from jsonschema import Draft202012Validator

from ortprof.schemas import report_schema, run_schema


@functools.lru_cache(maxsize=None)
def _validator(kind):
    schema = report_schema() if kind == "report" else run_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _assert_valid(kind, document):
    errors = sorted(_validator(kind).iter_errors(document), key=lambda error: list(error.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:200]}" for e in errors[:5])
        raise AssertionError(f"{kind} document does not match ortprof/schemas/{kind}.schema.json: {details}")
    return document


def assert_valid_report(document):
    return _assert_valid("report", document)


def assert_valid_run(document):
    return _assert_valid("run", document)
