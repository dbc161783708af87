"""``python -m runtime.contract``: regenerate ``manifest.schema.json`` from the typed classes."""

import json

from runtime.contract import SCHEMA_FILE, manifest_schema

SCHEMA_FILE.write_text(json.dumps(manifest_schema(), indent=2) + "\n")
print(f"wrote {SCHEMA_FILE}")
