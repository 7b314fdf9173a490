"""JSON Schemas of ortprof's JSON documents, shipped for users' scripts and CI.

Generated from the dataclasses (generate.py); scripts/gen_report_schema.py rewrites them."""
import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
REPORT_SCHEMA = SCHEMA_DIR / "report.schema.json"
RUN_SCHEMA = SCHEMA_DIR / "run.schema.json"


def report_schema():
    return json.loads(REPORT_SCHEMA.read_text())


def run_schema():
    return json.loads(RUN_SCHEMA.read_text())
