"""Sphinx extension: the settings table of configuration.md comes from the traits.

docs/configuration.md keeps the table between two markers, so that it reads on
GitHub too. The build puts the table made from jupyter_sshd_proxy.settings in
their place, and warns (an error with -W, as the tests build) when the file's
copy differs from it. To bring the file's copy up to date:

    .venv/bin/python docs/_ext/settings_table.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

PAGE = Path(__file__).parent.parent / "configuration.md"
TABLE = re.compile(r"(<!-- config-table:[^\n]*-->\n)(.*?)(<!-- end config-table -->)", re.DOTALL)
FIX = "run: .venv/bin/python docs/_ext/settings_table.py"


def generated() -> str:
    from jupyter_sshd_proxy.settings import config_table_markdown

    return config_table_markdown()


def with_table(text: str) -> tuple[str, bool]:
    """(text with the generated table between the markers, whether it differed)."""
    match = TABLE.search(text)
    if match is None:
        msg = "configuration.md lost its <!-- config-table: --> markers"
        raise ValueError(msg)
    table = generated()
    return text[: match.start(2)] + table + text[match.end(2) :], match.group(2) != table


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    if docname != "configuration":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    try:
        source[0], stale = with_table(source[0])
    except ValueError as error:
        logger.warning("%s", error, location=docname)
        return
    if stale:
        logger.warning(
            "the settings table differs from jupyter_sshd_proxy/settings.py; %s",
            FIX,
            location=docname,
        )


def setup(app: Any) -> dict:
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    text, stale = with_table(PAGE.read_text())
    if stale:
        PAGE.write_text(text)
    sys.stdout.write(f"{PAGE}: {'updated' if stale else 'up to date'}\n")
