"""JSON Schemas from the dataclasses that define ortprof's documents.

The dataclasses are the one definition of each document (model/report.py for
ortprof.report/1, model/manifest.py and the signals' sections for
ortprof.run/1); this turns their field types into JSON Schema: nullable where
a type is Optional, every field required, no undeclared keys. The shipped files
are written by scripts/gen_report_schema.py and checked by the tests.
"""
import dataclasses
import json
import typing
from typing import Any, Dict

from . import REPORT_SCHEMA, RUN_SCHEMA

DRAFT = "https://json-schema.org/draft/2020-12/schema"


class SchemaBuilder:
    """Definitions ($defs) of the dataclasses reached from a root; `enums` pins (class, field) to values."""

    def __init__(self, enums=None):
        self.enums = enums or {}
        self.definitions: Dict[str, Any] = {}

    def type_schema(self, tp):
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Union:
            inner = [a for a in args if a is not type(None)]
            schema = self.type_schema(inner[0]) if len(inner) == 1 else {"anyOf": [self.type_schema(a) for a in inner]}
            return {"anyOf": [schema, {"type": "null"}]} if type(None) in args else schema
        if dataclasses.is_dataclass(tp):
            self.define(tp)
            return {"$ref": f"#/$defs/{tp.__name__}"}
        if origin in (list, typing.List) or tp is list:
            return {"type": "array", "items": self.type_schema(args[0])} if args else {"type": "array"}
        if origin in (dict, typing.Dict) or tp is dict:
            if args and args[1] is not typing.Any:
                return {"type": "object", "additionalProperties": self.type_schema(args[1])}
            return {"type": "object"}
        if tp is typing.Any:
            return {}
        return {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
                bool: {"type": "boolean"}}[tp]

    def define(self, cls, skip=()):
        if cls.__name__ in self.definitions:
            return
        self.definitions[cls.__name__] = {}   # placeholder against recursion
        hints = typing.get_type_hints(cls)
        properties = {}
        names = [item.name for item in dataclasses.fields(cls) if item.name not in skip]
        for name in names:
            enum = self.enums.get((cls.__name__, name))
            properties[name] = {"enum": list(enum)} if enum else self.type_schema(hints[name])
        definition = {"type": "object", "properties": properties, "required": names, "additionalProperties": False}
        doc = (cls.__doc__ or "").strip().splitlines()
        if doc and not doc[0].startswith(cls.__name__ + "("):
            definition["description"] = doc[0]
        self.definitions[cls.__name__] = definition


def report_schema_document():
    from ..analysis.roles import ROLES
    from ..findings import SEVERITIES, Finding
    from ..model import report as model
    builder = SchemaBuilder({("ThreadRow", "role"): ROLES, ("PoolWorker", "role"): ROLES,
                             ("FutexThreadRow", "role"): ROLES, ("HotPath", "role"): ROLES,
                             ("HotPath", "category"): model.CATEGORIES, ("Finding", "severity"): SEVERITIES})
    builder.define(Finding)
    builder.define(model.Report)
    root = builder.definitions.pop("Report")
    root["properties"] = {"schema": {"const": model.SCHEMA}, **root["properties"]}
    root["required"] = ["schema"] + [name for name in root["required"] if name not in model.OPTIONAL_SECTIONS]
    root["properties"]["gates"] = {"anyOf": [{"type": "object", "properties": {
        "expressions": {"type": "array", "items": {"type": "string"}},
        "tripped": {"type": "array", "items": {"type": "string"}}},
        "required": ["expressions", "tripped"], "additionalProperties": False}, {"type": "null"}]}
    root["properties"]["findings"] = {"type": "array", "items": {"$ref": "#/$defs/Finding"}}
    return {"$schema": DRAFT, "$id": "https://ortprof.invalid/schemas/report.schema.json",
            "title": "ortprof report (ortprof.report/1)",
            "description": "Output of `ortprof report --json`. CPU figures are % of one core over window_seconds; "
                           "null where the run has no data for them (empty_sections says why).",
            **root, "$defs": builder.definitions}


def run_schema_document():
    """run.json: the core fields, then each signal's sections (optional: a run has those of its signals)."""
    from ..model import manifest as model
    from ..signals import SIGNALS
    builder = SchemaBuilder()
    builder.define(model.RunManifest, skip=("sections", "extra"))
    root = builder.definitions.pop("RunManifest")
    root["properties"]["schema"] = {"const": model.SCHEMA}
    for signal in SIGNALS:
        for key, section_type in signal.sections.items():
            root["properties"][key] = {"anyOf": [builder.type_schema(section_type), {"type": "null"}],
                                       "description": f"{signal.name} signal: {signal.description}"}
    # Keys a newer ortprof writes are kept by older readers, so the root stays open.
    root["additionalProperties"] = True
    return {"$schema": DRAFT, "$id": "https://ortprof.invalid/schemas/run.schema.json",
            "title": "ortprof run manifest (ortprof.run/1)",
            "description": "run.json of a run directory, written by `ortprof record` and the agent as the run "
                           "progresses. Times are CLOCK_MONOTONIC seconds (window) or Unix seconds (started_unix).",
            **root, "$defs": builder.definitions}


DOCUMENTS = {REPORT_SCHEMA: report_schema_document, RUN_SCHEMA: run_schema_document}


def schema_text(build):
    return json.dumps(build(), indent=2) + "\n"


def stale_schemas():
    """Shipped schema files that differ from what the dataclasses give now."""
    return [path for path, build in DOCUMENTS.items()
            if not path.exists() or path.read_text() != schema_text(build)]
