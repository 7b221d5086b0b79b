"""The audit events through a real jupyter_events EventLogger, without a server:
the schemas load, every event validates against them, text is escaped."""

from __future__ import annotations

import io
import json
import logging

import pytest
from jupyter_events import EventLogger

from jupyter_sshd_proxy import audit
from jupyter_sshd_proxy.ledger import Record
from jupyter_sshd_proxy_client.keys import grammar

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIGTV3rn4Dw4tCjTPVRkAXJsmn8mzwHNA6UvzGL4pZ0RX"


class FakeApp:
    def __init__(self):
        self.stream = io.StringIO()
        self.event_logger = EventLogger(handlers=[logging.StreamHandler(self.stream)])
        self.log = logging.getLogger("test")

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("me@laptop", "me@laptop"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("line\nbreak\r", "line\\nbreak\\r"),
        ("back\\slash", "back\\\\slash"),
        ("\u2028\u202e", "\\u2028\\u202e"),
        ("caf\u00e9 \u2603", "caf\u00e9 \u2603"),
        ("\udc80", "\\udc80"),  # a byte that was not UTF-8, from a file
        (None, None),
    ],
)
def test_escaped(text, shown):
    assert audit.escaped(text, 100) == shown


def test_escaped_is_cut_to_its_limit():
    assert audit.escaped("\x1b" * 100, 10) == "\\x1b\\x1b\\x"


def test_every_event_validates_against_its_schema(tmp_path):
    keys_file = tmp_path / "authorized_keys"
    comment = "me\x1b[31m"
    keys_file.write_text(f"ssh-ed25519 {KEY} {comment}\n")
    key = grammar.parse_key(f"ssh-ed25519 {KEY} {comment}")
    app = FakeApp()
    sender = audit.Audit.register(app, lambda: [str(keys_file)])
    record = Record("abc-1", hub_user="alice")
    record.login = {
        "user": "jovyan",
        "key_type": "ED25519",
        "fingerprint": key.fingerprint,
        "key_file": None,
        "key_line": None,
    }
    record.logged_in = True
    sender.connection_opened(record)
    record.route_closed = True
    record.duration, record.bytes_to_client, record.bytes_from_client = 1.23456, 10, 20
    record.client_version = "SSH-2.0-OpenSSH_9.6\x07"
    sender.connection_closed(record)
    sender.key_added("alice", key, str(keys_file))
    sender.key_removed("alice", key.fingerprint, None, [str(keys_file)])
    sender.refused("limit", None)
    opened, closed, added, removed, refused = app.events()
    assert opened["key_comment"] == "me\\x1b[31m"  # found by its fingerprint
    assert opened["key_file"] == str(keys_file)
    assert opened["client_version"] is None  # no route here to ask, none noted yet
    assert closed["client_version"] == "SSH-2.0-OpenSSH_9.6\\x07"
    assert closed["duration_seconds"] == 1.235
    assert added["key_comment"] == "me\\x1b[31m"
    assert removed["key_type"] is None
    assert refused == {**refused, "reason": "limit", "hub_user": None}


def test_an_event_that_does_not_validate_is_logged_not_raised(caplog):
    app = FakeApp()
    sender = audit.Audit.register(app, list)
    with caplog.at_level(logging.ERROR):
        sender.refused("not a reason", None)
    assert "could not send an audit event" in caplog.text
    assert app.events() == []


def test_registering_twice_in_one_process_is_harmless():
    app = FakeApp()
    audit.Audit.register(app, list)
    assert audit.Audit.register(app, list) is not None
