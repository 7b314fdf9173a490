"""The report as JSON (schema ortprof.report/1, see ortprof/schemas/report.schema.json)."""
import json
from dataclasses import dataclass

from .base import Exporter


@dataclass(frozen=True)
class JsonExporter(Exporter):

    def write(self, profile, report, stream):
        json.dump(report.to_json(), stream, indent=2, default=str)
        stream.write("\n")


EXPORTER = JsonExporter("json", ".json", "the report as JSON, schema ortprof.report/1")
