"""CSV cells that a spreadsheet will not run (OWASP "CSV injection").

Prompts, model outputs, rationales, usernames and campaign names are untrusted text. A
cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which some
spreadsheets skip before looking) is read as a formula by Excel, LibreOffice and Google
Sheets, and a formula can fetch URLs or, in old setups, run commands. Every CSV the
platform writes passes its cells through :func:`spreadsheet_safe`, which prefixes such a
string with a single quote: the spreadsheet shows the text, the quote is visible in a
plain-text reader. Numbers are written as numbers (a negative float is not a formula); only
strings are changed. JSONL and Parquet exports are left exact: they are read by programs.
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
