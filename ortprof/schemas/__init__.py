"""JSON Schemas of ortprof's JSON documents, shipped for users' scripts and CI."""
import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
REPORT_SCHEMA = SCHEMA_DIR / "report.schema.json"


def report_schema():
    return json.loads(REPORT_SCHEMA.read_text())
