"""Every report the tests make is checked against the shipped JSON Schema."""
import functools

from jsonschema import Draft202012Validator

from ortprof.schemas import report_schema


@functools.lru_cache(maxsize=1)
def _validator():
    schema = report_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def assert_valid_report(document):
    errors = sorted(_validator().iter_errors(document), key=lambda error: list(error.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:200]}" for e in errors[:5])
        raise AssertionError(f"report does not match ortprof/schemas/report.schema.json: {details}")
    return document
