"""The report as JSON (schema ortprof.report/1, see ortprof/schemas/report.schema.json)."""
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class JsonExporter:
    name: str = "json"
    suffix: str = ".json"
    binary: bool = False
    description: str = "the report as JSON, schema ortprof.report/1"

    def write(self, profile, report, stream):
        json.dump(report.to_json(), stream, indent=2, default=str)
        stream.write("\n")


EXPORTER = JsonExporter()
