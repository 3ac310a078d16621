"""Shared by the report tests: where the real runs' outputs are, and reading a page back."""

import re
from pathlib import Path

DATA = Path(__file__).parent / "data"
SECTION = re.compile(r'<section id="([^"]+)" class="result" data-kind="([^"]+)">(.*?)</section>',
                     re.S)


def sections_of(page: str) -> dict[str, tuple[str, str]]:
    """id -> (kind, inner HTML) of every result section on a page."""
    return {m[1]: (m[2], m[3]) for m in SECTION.finditer(page)}
