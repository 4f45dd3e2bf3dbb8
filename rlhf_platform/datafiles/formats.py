"""File formats of the data that goes in and out: which formats each direction takes,
their content types and extensions, and reading a file's bytes. One definition, used by the
imports and exports (:mod:`.imports`, :mod:`.exports`), the API, the pages and the commands."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rlhf_platform.errors import InvalidInput

PREFERENCE_FORMS = ("standard", "conversational")
LABEL_SOURCES = ("all", "human", "judge")
LABEL_FORMATS = ("jsonl", "csv", "parquet")
IMPORT_FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}

#: A progress callback: called with how many rows were just handled (or None).
Progress = Callable[[int], None] | None


def format_from_name(name: str, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format the file name's extension names."""
    if fmt:
        if fmt not in IMPORT_FORMATS:
            raise InvalidInput(
                f"Unknown format {fmt!r}; use {', '.join(IMPORT_FORMATS)}.", code="invalid_format"
            )
        return fmt
    lowered = name.lower()
    for ext, found in EXTENSIONS.items():
        if lowered.endswith(ext):
            return found
    raise InvalidInput(
        "Cannot tell the format from the file name; give one of jsonl, csv, parquet.",
        code="invalid_format",
    )


def read_parquet_records(data: bytes) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        records: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return records
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"Not a readable Parquet file: {exc}", code="import_invalid") from None


def decode_text(data: bytes) -> str:
    """A text file's bytes as UTF-8 (a byte-order mark allowed), or ``invalid_encoding``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"The file is not UTF-8 text (byte {exc.start}).", code="invalid_encoding"
        ) from None
