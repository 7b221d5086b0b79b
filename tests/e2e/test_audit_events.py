"""Audit events of a real server run, read from the file an operator's
c.EventLogger.handlers writes, field by field; and the attacks on them: a key
comment and a client version line with control characters, JSON and a
token-looking string in them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jupyter_sshd_proxy import audit

from ..support.helpers import SSHClient, http_request, wait_for

TESTS_DIR = Path(__file__).resolve().parent.parent / "support"  # no_execute_authorizer
NO_EXECUTE = "--ServerApp.authorizer_class=no_execute_authorizer.ReadWriteOnly"
FAKE_TOKEN = "token=5f4dcc3b5aa765d61d8327deb882cf99"
# A key comment that tries everything a line of JSON or a terminal could fall for.
HOSTILE_COMMENT = f'me\x1b[2J\x07\x08 "}}, "hub_user": "admin", "x": "\\ {FAKE_TOKEN}\u2028end\x7f'
HOSTILE_ESCAPED = (
    f'me\\x1b[2J\\x07\\x08 "}}, "hub_user": "admin", "x": "\\\\ {FAKE_TOKEN}\\u2028end\\x7f'
)
HOSTILE_VERSION = f'SSH-2.0-Evil\x1b]0;owned\x07 {{"hub_user": "admin"}} {FAKE_TOKEN}'
HOSTILE_VERSION_ESCAPED = f'SSH-2.0-Evil\\x1b]0;owned\\x07 {{"hub_user": "admin"}} {FAKE_TOKEN}'
CAPSULE = {"__timestamp__", "__schema__", "__schema_version__", "__metadata_version__"}


@pytest.fixture
def once(account):
    if account.is_current and os.getuid() == 0:
        pytest.skip("runs once, with the server as the unprivileged account")


class Events:
    """The events file of one server, as c.EventLogger.handlers writes it."""

    def __init__(self, setup, name: str):
        self.path = setup.base / f"events-{name}.log"
        self.config = setup.base / f"events-{name}_config.py"
        self.config.write_text(
            f"import logging\nc.EventLogger.handlers = [logging.FileHandler({str(self.path)!r})]\n"
        )
        setup.account.own(self.config)

    @property
    def arg(self) -> str:
        return f"--config={self.config}"

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def all(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]

    def of(self, schema: str, **fields) -> list[dict]:
        return [
            event
            for event in self.all()
            if event["__schema__"] == audit.SCHEMAS[schema]
            and all(event.get(k) == v for k, v in fields.items())
        ]

    def wait(self, schema: str, count: int = 1, **fields) -> list[dict]:
        return wait_for(
            lambda: (lambda found: found if len(found) >= count else None)(
                self.of(schema, **fields)
            ),
            15,
            f"{count} {schema} event(s) with {fields}",
        )


def check_fields(event: dict, schema: str) -> None:
    """Exactly the schema's fields (every required one), and the capsule."""
    import yaml

    with open(os.path.join(audit.SCHEMA_DIR, f"{schema}.yaml")) as stream:
        definition = yaml.safe_load(stream)
    fields = set(event) - CAPSULE
    assert set(definition["required"]) <= fields <= set(definition["properties"])
    assert set(event) >= CAPSULE


def call(server, method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    return server.request(method, "/sshd-proxy/api" + path, headers=headers, body=data)


@pytest.fixture
def hostile_key(setup, run_dir) -> Path:
    directory = run_dir / f"hostile-{setup.account.name}"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "id_ed25519"
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", HOSTILE_COMMENT,
             "-f", str(path)],
            check=True,
        )  # fmt: skip
    return path


def fingerprint_of(public_key: Path) -> str:
    line = public_key.read_text().split()
    import hashlib

    digest = hashlib.sha256(base64.b64decode(line[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def test_a_key_its_session_and_its_removal_are_audited(once, setup, hostile_key):
    events = Events(setup, "session")
    public = hostile_key.with_suffix(".pub")
    fingerprint = fingerprint_of(public)
    with setup.running(events.arg) as server:
        status, body = call(
            server, "POST", "/authorized-keys", {"key": public.read_text().rstrip("\n")}
        )
        assert status == 201, body
        ssh = SSHClient(server, hostile_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
        result = ssh.ssh("head -c 5000 /dev/zero")
        assert result.returncode == 0, result.stderr
        query = "?fingerprint=" + urllib.parse.quote(fingerprint, safe="")
        assert call(server, "DELETE", "/authorized-keys" + query)[0] == 204

        added = events.wait("authorized_key", action="added")[0]
        check_fields(added, "authorized_key")
        assert added | {"__timestamp__": None} == {
            "__timestamp__": None,
            "__schema__": audit.AUTHORIZED_KEY,
            "__schema_version__": "1",
            "__metadata_version__": 1,
            "action": "added",
            "hub_user": None,  # no Hub here; test_hub_operators.py has one
            "key_type": "ssh-ed25519",
            "key_fingerprint": fingerprint,
            "key_comment": HOSTILE_ESCAPED,
            "files": [str(setup.authorized_keys)],
        }
        removed = events.wait("authorized_key", action="removed")[0]
        check_fields(removed, "authorized_key")
        assert removed["key_comment"] == HOSTILE_ESCAPED
        assert removed["files"] == [str(setup.authorized_keys)]

        opened = events.wait("connection", action="opened", key_fingerprint=fingerprint)[0]
        closed = events.wait("connection", action="closed", key_fingerprint=fingerprint)[0]
        for event in (opened, closed):
            check_fields(event, "connection")
            assert event["connection"] == opened["connection"]
            assert event["hub_user"] is None
            assert event["unix_user"] == setup.account.name
            assert event["key_type"] == "ED25519"
            assert event["key_comment"] == HOSTILE_ESCAPED
            assert event["key_file"] == str(setup.authorized_keys)
            assert event["client_version"].startswith("SSH-2.0-OpenSSH_")
        assert closed["logged_in"] is True
        assert 0 < closed["duration_seconds"] < 30
        assert 5000 < closed["bytes_to_client"] < 100_000
        assert 500 < closed["bytes_from_client"] < 100_000
        assert opened.keys() == closed.keys() - {
            "logged_in", "duration_seconds", "bytes_to_client", "bytes_from_client"
        }  # fmt: skip
        token = server.token
    text = events.path.read_text()
    assert token not in text
    assert_clean(events)


def assert_clean(events: Events) -> None:
    """One JSON object per line, every value printable: nothing a log reader or a
    terminal would take for a new line, a field or a command."""
    for line in events.lines():
        assert all(ch.isprintable() for ch in line), line
        for value in json.loads(line).values():
            if isinstance(value, str):
                assert all(ch.isprintable() for ch in value), value


def raw_websocket(server):
    return connect(
        f"ws://127.0.0.1:{server.port}/sshd/",
        additional_headers={"Authorization": f"token {server.token}"},
        open_timeout=10,
        compression=None,
    )


def test_a_hostile_client_version_and_the_limit(once, setup):
    """A client sends a version line with control characters, JSON and a fake
    token: it is kept escaped in one field. More connections than may wait are
    refused, and the refusal is audited."""
    events = Events(setup, "hostile")
    with setup.running(events.arg, JUPYTER_SSHD_PROXY_MAX_UNAUTHENTICATED="1") as server:
        with raw_websocket(server) as ws:
            assert ws.recv(timeout=10).startswith(b"SSH-2.0-")
            ws.send(HOSTILE_VERSION.encode() + b"\r\n")
            with raw_websocket(server), raw_websocket(server) as third:  # noqa: SIM117 (3.9)
                with pytest.raises(ConnectionClosed):
                    third.recv(timeout=10)
        closed = events.wait("connection", action="closed", client_version=HOSTILE_VERSION_ESCAPED)
        event = closed[0]
        check_fields(event, "connection")
        assert event["logged_in"] is False
        assert event["unix_user"] is None
        assert event["key_fingerprint"] is None
        assert event["hub_user"] is None
        limit = events.wait("refused", reason="limit")[0]
        check_fields(limit, "refused")
        token = server.token
    assert_clean(events)
    for line in events.lines():
        parsed = json.loads(line)
        assert not any(isinstance(v, str) and FAKE_TOKEN in v for k, v in parsed.items()
                       if k not in ("client_version", "key_comment"))  # fmt: skip
    assert token not in events.path.read_text()


def test_an_upgrade_without_the_right_to_a_terminal_is_audited(once, setup):
    events = Events(setup, "no-execute")
    server = setup.server(events.arg, NO_EXECUTE, PYTHONPATH=str(TESTS_DIR)).start()
    try:
        status, _ = http_request(
            server.port, "GET", "/sshd/", server.token,
            headers={"Connection": "Upgrade", "Upgrade": "websocket",
                     "Sec-WebSocket-Version": "13",
                     "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()},
        )  # fmt: skip
        assert status == 403
        refused = events.wait("refused", reason="no_terminal_right")[0]
        check_fields(refused, "refused")
        assert refused["hub_user"] is None
    finally:
        server.stop()
