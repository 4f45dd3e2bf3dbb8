"""CSV cells that a spreadsheet will not run (OWASP "CSV injection").

Prompts, model outputs, rationales, usernames and campaign names are untrusted text. A
cell that starts with ``=``, ``+``, ``-`` or ``@`` is read as a formula by Excel,
LibreOffice and Google Sheets, and a formula can fetch URLs or, in old setups, run commands.
Following OWASP's guidance, every CSV the platform writes passes its cells through
:func:`spreadsheet_safe`, which prefixes a risky string with a single quote: the spreadsheet
shows the text, the quote is visible in a plain-text reader.

A string is risky when:

- it starts with ``=``, ``+``, ``-`` or ``@``, or with a character that Unicode
  compatibility normalization (NFKC, which some spreadsheets apply on input) turns into one:
  the fullwidth ``＝ ＋ － ＠``, the small ``﹦ ﹢ ﹣ ﹫`` and the like;
- it starts with whitespace or a control character (a space, tab, carriage return, line
  feed, no-break space...): spreadsheets skip leading whitespace before looking for a
  formula, and a leading tab or newline is OWASP's own example.

Numbers are written as numbers (a negative float is not a formula); only strings are
changed. JSONL and Parquet exports are left exact: they are read by programs.
"""

from __future__ import annotations

import unicodedata
from typing import Any

FORMULA_START = frozenset("=+-@")


def is_formula_like(value: str) -> bool:
    if not value:
        return False
    first = value[0]
    if first.isspace() or unicodedata.category(first) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
        return True
    return unicodedata.normalize("NFKC", first)[:1] in FORMULA_START


def spreadsheet_safe(value: Any) -> Any:
    if isinstance(value, str) and is_formula_like(value):
        return "'" + value
    return value
