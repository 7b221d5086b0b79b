"""Sphinx configuration: the manual in docs/, written in MyST markdown.

Build it as the tests do: .venv/bin/python -m sphinx -W -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

from jupyter_sshd_proxy import __version__  # noqa: E402

project = "jupyter-sshd-proxy"
author = "jupyter-sshd-proxy developers"
copyright = "jupyter-sshd-proxy developers"
version = release = __version__

extensions = [
    "myst_parser",
    "settings_table",  # _ext/settings_table.py: the settings table from the traits
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Links like [Idle culling](operators.md#idle-culling) work on GitHub and here.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

highlight_language = "none"  # a fence without a language is shown as it is
html_theme = "alabaster"  # Sphinx's own: no theme to install
html_title = f"jupyter-sshd-proxy {version}"
html_theme_options = {
    "description": "ssh into your Jupyter server",
    "fixed_sidebar": True,
    "page_width": "1240px",  # the settings and bounds tables are wide
    "body_max_width": "none",
}
