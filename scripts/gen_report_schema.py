"""Write ortprof/schemas/report.schema.json from the Report dataclasses.

The dataclasses in ortprof/model/report.py are the one definition of
ortprof.report/1; this turns their field types into JSON Schema (nullable where
the type is Optional, no unknown keys), adds the enumerations of roles,
categories and severities, and writes the file. tests/test_report_schema.py
fails when the shipped file is stale.

    python scripts/gen_report_schema.py          # rewrite the file
    python scripts/gen_report_schema.py --check  # exit 1 when it differs
"""
import dataclasses
import json
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ortprof.analysis.roles import ROLES  # noqa: E402
from ortprof.findings import SEVERITIES, Finding  # noqa: E402
from ortprof.model import report as model  # noqa: E402
from ortprof.schemas import REPORT_SCHEMA  # noqa: E402

ENUMS = {("ThreadRow", "role"): list(ROLES), ("PoolWorker", "role"): list(ROLES), ("FutexThreadRow", "role"): list(ROLES),
         ("HotPath", "role"): list(ROLES), ("HotPath", "category"): list(model.CATEGORIES),
         ("Finding", "severity"): list(SEVERITIES)}


def _type_schema(tp, definitions):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        schema = _type_schema(inner[0], definitions) if len(inner) == 1 else {"anyOf": [_type_schema(a, definitions) for a in inner]}
        return {"anyOf": [schema, {"type": "null"}]} if type(None) in args else schema
    if dataclasses.is_dataclass(tp):
        _define(tp, definitions)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (list, typing.List) or tp is list:
        return {"type": "array", "items": _type_schema(args[0], definitions)} if args else {"type": "array"}
    if origin in (dict, typing.Dict) or tp is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1], definitions)} if args else {"type": "object"}
    return {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
            bool: {"type": "boolean"}}[tp]


def _define(cls, definitions):
    if cls.__name__ in definitions:
        return
    definitions[cls.__name__] = {}   # placeholder against recursion
    hints = typing.get_type_hints(cls)
    properties = {}
    for item in dataclasses.fields(cls):
        schema = _type_schema(hints[item.name], definitions)
        enum = ENUMS.get((cls.__name__, item.name))
        if enum:
            schema = {"enum": enum}
        properties[item.name] = schema
    definitions[cls.__name__] = {"type": "object", "properties": properties,
                                 "required": [f.name for f in dataclasses.fields(cls)],
                                 "additionalProperties": False}
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc and not doc[0].startswith(cls.__name__ + "("):
        definitions[cls.__name__]["description"] = doc[0]


def build_schema():
    definitions = {}
    _define(Finding, definitions)
    _define(model.Report, definitions)
    root = definitions.pop("Report")
    root["properties"] = {"schema": {"const": model.SCHEMA}, **root["properties"]}
    root["required"] = ["schema"] + [name for name in root["required"] if name not in model.OPTIONAL_SECTIONS]
    root["properties"]["gates"] = {"anyOf": [{"type": "object", "properties": {
        "expressions": {"type": "array", "items": {"type": "string"}},
        "tripped": {"type": "array", "items": {"type": "string"}}},
        "required": ["expressions", "tripped"], "additionalProperties": False}, {"type": "null"}]}
    root["properties"]["findings"] = {"type": "array", "items": {"$ref": "#/$defs/Finding"}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://ortprof.invalid/schemas/report.schema.json",
            "title": "ortprof report (ortprof.report/1)",
            "description": "Output of `ortprof report --json`. CPU figures are % of one core over window_seconds; "
                           "null where the run has no data for them (empty_sections says why).",
            **root, "$defs": definitions}


def main():
    text = json.dumps(build_schema(), indent=2) + "\n"
    if "--check" in sys.argv:
        if REPORT_SCHEMA.read_text() != text:
            print(f"{REPORT_SCHEMA} is stale: run python scripts/gen_report_schema.py", file=sys.stderr)
            return 1
        return 0
    REPORT_SCHEMA.write_text(text)
    print(f"wrote {REPORT_SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
