"""Write the contract's JSON Schemas to docs/contract/ (`python -m daily_index.schema_docs`).

The schemas are generated from the pydantic models in `daily_index.contract`, so the docs
cannot drift from the code; a test compares the committed files with what is generated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from daily_index.contract import json_schemas

DEFAULT_OUT_DIR = Path("docs/contract")


def schema_filename(name: str) -> str:
    return f"{name}.schema.json"


def render_schema(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: str | Path = DEFAULT_OUT_DIR) -> list[Path]:
    """Write one `<Model>.schema.json` per wire model into out_dir; returns the paths."""
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = target / schema_filename(name)
        path.write_text(render_schema(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in write_schemas(args[0] if args else DEFAULT_OUT_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
