"""Audit events through Jupyter's event system (jupyter_events).

The server extension registers the schemas in event_schemas/ with the
Jupyter server's event logger; an operator routes the events with
`c.EventLogger.handlers` (a logging.FileHandler writes one JSON object per
line). Three kinds, each with a schema that names and explains every field:

  connection      an SSH connection opened (logged in) or closed
  authorized_key  a key added or removed through the REST API or the page
  refused         a connection refused: no right to a terminal, SSH off,
                  the limit, sshd failing

No token or secret is ever part of an event: the fields are names, key
fingerprints, counts and the two pieces of text a client or a key line
chooses (client_version, key_comment), which are escaped and cut.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jupyter_sshd_proxy_client.keys import edits
from jupyter_sshd_proxy_client.keys.grammar import PublicKey

from .ledger import Record

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "event_schemas")
SCHEMA_BASE = "https://schema.jupyter.org/jupyter_sshd_proxy"
CONNECTION = f"{SCHEMA_BASE}/connection/v1"
AUTHORIZED_KEY = f"{SCHEMA_BASE}/authorized_key/v1"
REFUSED = f"{SCHEMA_BASE}/refused/v1"
SCHEMAS = {"connection": CONNECTION, "authorized_key": AUTHORIZED_KEY, "refused": REFUSED}
MAX_COMMENT = 200
MAX_VERSION = 255


def escaped(text: str | None, limit: int) -> str | None:
    """text with backslashes and every character that is not printable escaped
    (\\\\, \\x1b, \\n, \\u2028), cut to limit characters: one line that says
    what it held."""
    if text is None:
        return None
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)[:limit]


class Audit:
    """Sends this server's events; the route, the REST API and the ledger call it."""

    def __init__(
        self,
        event_logger: Any,
        log: logging.Logger,
        authorized_keys_files: Callable[[], Iterable[str]],
    ) -> None:
        """authorized_keys_files() lists the files a key's comment is looked up in."""
        self.event_logger = event_logger
        self.log = log
        self.authorized_keys_files = authorized_keys_files

    @classmethod
    def register(
        cls, serverapp: Any, authorized_keys_files: Callable[[], Iterable[str]]
    ) -> Audit | None:
        event_logger = getattr(serverapp, "event_logger", None)
        if event_logger is None:
            return None
        for name in SCHEMAS:
            if SCHEMAS[name] not in event_logger.schemas:
                event_logger.register_event_schema(Path(SCHEMA_DIR, f"{name}.yaml"))
        return cls(event_logger, serverapp.log, authorized_keys_files)

    def _emit(self, schema_id: str, data: dict[str, Any]) -> None:
        try:
            self.event_logger.emit(schema_id=schema_id, data=data)
        except Exception as error:  # an event must never break a connection
            self.log.error("jupyter-sshd-proxy: could not send an audit event: %s", error)

    # SSH connections.

    def connection_opened(self, record: Record) -> None:
        self._emit(CONNECTION, {"action": "opened", **self._connection(record)})

    def connection_closed(self, record: Record) -> None:
        self._emit(
            CONNECTION,
            {
                "action": "closed",
                **self._connection(record),
                "logged_in": record.logged_in,
                "duration_seconds": (
                    round(record.duration, 3) if record.duration is not None else None
                ),
                "bytes_to_client": record.bytes_to_client,
                "bytes_from_client": record.bytes_from_client,
            },
        )

    def _connection(self, record: Record) -> dict[str, Any]:
        login = record.login or {}
        certified = login.get("certificate_serial") is not None
        if "key_comment" not in login and login.get("fingerprint") and not certified:
            login["key_comment"], found_in = self._comment(login)
            login["key_file"] = login.get("key_file") or found_in
        version = record.client_version
        if version is None and record.route is not None and not record.route_closed:
            version = record.route.client_version
        return {
            "connection": record.id,
            "hub_user": record.hub_user,
            "unix_user": login.get("user"),
            "key_type": login.get("key_type"),
            "key_fingerprint": login.get("fingerprint"),
            "key_comment": escaped(login.get("key_comment"), MAX_COMMENT),
            "key_file": login.get("key_file"),
            "client_version": escaped(version, MAX_VERSION),
            "certificate_id": escaped(login.get("certificate_id"), MAX_COMMENT),
            "certificate_serial": login.get("certificate_serial"),
        }

    def _comment(self, login: dict[str, Any]) -> tuple[str | None, str | None]:
        """The comment of the authorized_keys line that let the key in, and its
        file: the line sshd named (LogLevel VERBOSE), or else the first line
        in the configured files with that fingerprint."""
        fingerprint = login["fingerprint"]
        try:
            paths = list(self.authorized_keys_files())
        except Exception:
            return None, None
        named = login.get("key_file")
        if named in paths:
            paths.remove(named)
            paths.insert(0, named)
        for path in paths:
            try:
                found = edits.read_keys(path)
            except Exception:  # unreadable now: the event goes out without it
                continue
            for key in found:
                if key.fingerprint == fingerprint and not key.cert_authority:
                    return key.comment, path
        return None, None

    # Keys and refusals.

    def key_added(self, hub_user: str | None, key: PublicKey, path: str) -> None:
        self._emit(
            AUTHORIZED_KEY,
            {
                "action": "added",
                "hub_user": hub_user,
                "key_type": key.type,
                "key_fingerprint": key.fingerprint,
                "key_comment": escaped(key.comment, MAX_COMMENT),
                "files": [path],
            },
        )

    def key_removed(
        self, hub_user: str | None, fingerprint: str, key: PublicKey | None, paths: list[str]
    ) -> None:
        """key: the line's key as it was, if it could be read before it went."""
        self._emit(
            AUTHORIZED_KEY,
            {
                "action": "removed",
                "hub_user": hub_user,
                "key_type": key.type if key is not None else None,
                "key_fingerprint": fingerprint,
                "key_comment": escaped(key.comment, MAX_COMMENT) if key is not None else None,
                "files": paths,
            },
        )

    def refused(self, reason: str, hub_user: str | None) -> None:
        self._emit(REFUSED, {"reason": reason, "hub_user": hub_user})
