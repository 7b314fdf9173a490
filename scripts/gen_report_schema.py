"""Write ortprof/schemas/*.schema.json (report and run.json) from the dataclasses.

The dataclasses are the one definition of each document (see
ortprof/schemas/generate.py); tests/test_report_schema.py fails when a shipped
file is stale.

    python scripts/gen_report_schema.py          # rewrite the files
    python scripts/gen_report_schema.py --check  # exit 1 when one differs
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ortprof.schemas.generate import DOCUMENTS, schema_text, stale_schemas  # noqa: E402


def main():
    if "--check" in sys.argv:
        stale = stale_schemas()
        for path in stale:
            print(f"{path} is stale: run python scripts/gen_report_schema.py", file=sys.stderr)
        return 1 if stale else 0
    for path, build in DOCUMENTS.items():
        path.write_text(schema_text(build))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
