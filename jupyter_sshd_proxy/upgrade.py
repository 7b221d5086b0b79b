"""An upgrade from the original jupyter-sshd-proxy (0.3.0), noticed at start.

Operators upgrade with `pip install -U jupyter-sshd-proxy` in their images.
What the original left behind is honoured: its variable
JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH (settings.py) and its users' host
key ~/.ssh/jupyter_sshd_hostkey (host_keys.py); JUPYTER_SSHD_PROXY_LOG_LEVEL
means what it meant. Where this package differs on purpose, the server's log
says so once when it starts and finds either, and docs/upgrading.md at length.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

ORIGINAL_VARIABLE = "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH"

DIFFERENCES = (
    "sshd takes public keys only (no passwords) and only for this server's user; "
    "ssh through /sshd/ and adding keys need the right to open a terminal; ssh sessions "
    "get the Jupyter server's environment, as a terminal does (c.SSHDProxy.pass_environment); "
    "sshd also presents new host keys, which clients learn with ssh's UpdateHostKeys; "
    "the launcher has an SSH tile that opens a page to manage keys"
)


def original_settings(legacy_host_key: str, environ: Mapping[str, str]) -> list[str]:
    """What the original jupyter-sshd-proxy left here: its variable, its host key."""
    found = [ORIGINAL_VARIABLE] if environ.get(ORIGINAL_VARIABLE, "").strip() else []
    if legacy_host_key:
        path = os.path.expanduser(legacy_host_key)
        if os.path.lexists(path):
            found.append(f"its host key {path}")
    return found


def log_upgrade_notice(
    legacy_host_key: str, log: logging.Logger, environ: Mapping[str, str] = os.environ
) -> None:
    """One line in the server's log when the original's settings are found."""
    found = original_settings(legacy_host_key, environ)
    if found:
        log.warning(
            "jupyter-sshd-proxy: upgraded from the original jupyter-sshd-proxy (found %s, "
            "kept as they were); what differs on purpose: %s; see docs/upgrading.md",
            " and ".join(found),
            DIFFERENCES,
        )
