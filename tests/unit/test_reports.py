"""The supervisor's line before sshd's, its reading of sshd's log lines, and
its reports socket: plain functions and a real unix socket, no sshd."""

from __future__ import annotations

import os

import pytest

from jupyter_sshd_proxy import reports

FINGERPRINT = "SHA256:qRJMwZKO8+8Muy2dKM1bNLJTqvpqnGvQ2qsOmqDtaSc"


def test_a_greeting_is_read_and_the_ssh_bytes_after_it_are_kept():
    data = reports.greeting("a1b2c3-7") + b"SSH-2.0-OpenSSH_9.2\r\n"
    assert reports.read_greeting(data) == ("connection", "a1b2c3-7", b"SSH-2.0-OpenSSH_9.2\r\n")
    assert reports.read_greeting(reports.refusal("limit")) == ("refused", "limit", b"")


@pytest.mark.parametrize("cut", [1, 5, 19, 30])
def test_a_greeting_in_pieces_waits_for_its_line_end(cut):
    data = reports.greeting("a1b2c3-7")
    assert reports.read_greeting(data[:cut]) is None
    assert reports.read_greeting(data)[:2] == ("connection", "a1b2c3-7")


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"S",
        b"jupyter-sshd-proxy connection bad id with spaces\r\n",
        b"jupyter-sshd-proxy " + b"x" * 200,
        b"jupyter-sshd-proxy other thing\r\n",
    ],
)
def test_anything_else_passes_through_untouched(data):
    assert reports.read_greeting(data) == ("", "", data)


def test_ssh_clients_skip_the_line_as_rfc_4253_allows():
    """It is not a version line: it must not start with "SSH-" (RFC 4253, 4.2)."""
    assert not reports.greeting("x-1").startswith(b"SSH-")
    assert not reports.refusal("limit").startswith(b"SSH-")


def test_sshd_login_lines():
    info = f"Accepted publickey for alice from 127.0.0.1 port 51234 ssh2: ED25519 {FINGERPRINT}"
    assert reports.read_sshd_line(info) == {
        "kind": "login",
        "user": "alice",
        "key_type": "ED25519",
        "fingerprint": FINGERPRINT,
        "certificate_id": None,
        "certificate_serial": None,
    }
    verbose = f"Accepted key RSA {FINGERPRINT} found at /home/a b/.ssh/authorized_keys:12"
    assert reports.read_sshd_line(verbose) == {
        "kind": "key",
        "key_type": "RSA",
        "fingerprint": FINGERPRINT,
        "key_file": "/home/a b/.ssh/authorized_keys",
        "key_line": 12,
    }
    cert = (
        f"Accepted publickey for bob from UNKNOWN port 65535 ssh2: ED25519-CERT {FINGERPRINT} "
        f"ID alice (serial 1) CA ED25519 {FINGERPRINT}"
    )
    assert reports.read_sshd_line(cert)["key_type"] == "ED25519-CERT"


@pytest.mark.parametrize(
    "line",
    [
        f"Failed publickey for alice from 127.0.0.1 port 1 ssh2: ED25519 {FINGERPRINT}",
        "Postponed publickey for alice from 127.0.0.1 port 1 ssh2 [preauth]",
        "Connection closed by authenticating user alice 127.0.0.1 port 1 [preauth]",
        # What a client could make sshd log: not at the start of the line.
        f"Invalid user Accepted publickey for root from x ssh2: ED25519 {FINGERPRINT}",
    ],
)
def test_other_lines_say_nothing(line):
    assert reports.read_sshd_line(line) is None


def test_reports_reach_the_listener_in_order(tmp_path):
    path = str(tmp_path / "reports")
    sender = reports.Sender(path)
    sender.send(type="hello", pid=1)  # nobody listens yet: kept
    assert sender.unsent
    listener = reports.listen(path)
    try:
        assert os.stat(path).st_mode & 0o077 == 0
        sender.send(type="end", id="x-1", logged_in=False)
        assert not sender.unsent
        conn, _ = listener.accept()
        conn.settimeout(5)
        received = b""
        while received.count(b"\n") < 2:
            received += conn.recv(4096)
        lines = [reports.read_report(line) for line in received.splitlines()]
        assert lines == [
            {"type": "hello", "pid": 1},
            {"type": "end", "id": "x-1", "logged_in": False},
        ]
        conn.close()
    finally:
        listener.close()
        sender.close()


def test_a_reader_that_never_reads_costs_the_supervisor_a_bounded_buffer(tmp_path):
    path = str(tmp_path / "reports")
    listener = reports.listen(path)
    sender = reports.Sender(path)
    try:
        for number in range(50_000):
            sender.send(type="waiting", count=number)
        assert len(sender.unsent) <= reports.MAX_UNSENT
        assert sender.dropped > 0
    finally:
        listener.close()
        sender.close()


@pytest.mark.parametrize(
    "line", [b"not json", b"[1, 2]", b'{"no": "type"}', b'{"type": 3}', b"{" * 20000]
)
def test_report_lines_that_are_not_reports_are_dropped(line):
    assert reports.read_report(line) is None
