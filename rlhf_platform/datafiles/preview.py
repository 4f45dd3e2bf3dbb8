"""Import preview: what importing a prompt or pair file would do, with nothing written (the
setup page shows it before the researcher confirms the import)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from rlhf_platform.datafiles.formats import decode_text, read_parquet_records
from rlhf_platform.datafiles.imports import parse_pair_bytes, parse_prompt_bytes
from rlhf_platform.errors import InvalidInput

IMPORT_KINDS = ("prompts", "pairs")


@dataclass(frozen=True)
class ImportPreview:
    """What importing a file would do: its first rows as read, how many rows it holds, and
    every bad row with its line (JSONL, CSV: the file's line; Parquet: the row number)."""

    kind: str
    fmt: str
    total: int
    columns: list[str]
    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def cells(self) -> list[list[str | None]]:
        """The preview rows as text, one cell per column (None where a row lacks it)."""

        def text(value: Any) -> str | None:
            if value is None:
                return None
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

        return [[text(row.get(c)) for c in self.columns] for row in self.rows]

    @property
    def unit(self) -> str:
        """What an error's number counts: the file's lines (JSONL, CSV), or rows (Parquet)."""
        return "row" if self.fmt == "parquet" else "line"


def _raw_records(data: bytes, fmt: str) -> list[dict[str, Any]]:
    """The file's rows as dicts, for display only (a line that is not a JSON object is
    shown as its text)."""
    if fmt == "parquet":
        return read_parquet_records(data)
    text = decode_text(data)
    if fmt == "csv":
        return [dict(r) for r in csv.DictReader(io.StringIO(text))]
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        records.append(value if isinstance(value, dict) else {"(line)": line[:200]})
    return records


def import_preview(*, data: bytes, fmt: str, kind: str, limit: int = 5) -> ImportPreview:
    """Check a prompt or pair file without importing anything: the first ``limit`` rows and
    every bad row. The import itself (``prompts_import_file`` / ``pairs_import_file``)
    checks again and imports all rows or none."""
    if kind not in IMPORT_KINDS:
        raise InvalidInput(f"Unknown import {kind!r}; use prompts or pairs.", code="invalid_kind")
    errors: list[dict[str, Any]] = []
    try:
        records = _raw_records(data, fmt)
    except InvalidInput as exc:
        return ImportPreview(kind, fmt, 0, [], [], [{"line": None, "error": exc.message}])
    try:
        (parse_prompt_bytes if kind == "prompts" else parse_pair_bytes)(data, fmt)
    except InvalidInput as exc:
        details = exc.details  # checked_rows's list of bad rows
        errors = (
            list(details)
            if isinstance(details, list) and details
            else [{"line": None, "error": exc.message}]
        )
    columns = list(dict.fromkeys(k for r in records[:limit] for k in r))
    return ImportPreview(kind, fmt, len(records), columns, records[:limit], errors)
