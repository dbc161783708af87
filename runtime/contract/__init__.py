"""The typed contract between the stages: the manifest and its precision vocabulary, with one reader, one writer
and a published JSON Schema (``manifest.schema.json``). Nothing else parses ``manifest.json``."""

from runtime.contract.files import check_names, read_manifest, write_manifest
from runtime.contract.manifest import (
    GOLDEN_FILE,
    IO,
    MANIFEST,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    ArtifactRow,
    Compression,
    Decisions,
    Evaluation,
    Golden,
    Manifest,
    Model,
    Precision,
    Preprocessing,
    QuantizerDecision,
    Reference,
    Skipped,
    Source,
    Tensor,
    U8Decision,
    manifest_schema,
    parse_manifest,
)

__all__ = ["GOLDEN_FILE", "IO", "MANIFEST", "SCHEMA_FILE", "SCHEMA_VERSION", "ArtifactRow", "Compression",
           "Decisions", "Evaluation", "Golden", "Manifest", "Model", "Precision", "Preprocessing",
           "QuantizerDecision", "Reference", "Skipped", "Source", "Tensor", "U8Decision", "manifest_schema",
           "check_names", "parse_manifest", "read_manifest", "write_manifest"]
