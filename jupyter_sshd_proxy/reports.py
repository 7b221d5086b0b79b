"""What the supervisor tells the Jupyter server about each SSH connection.

The supervisor (its own process) sees what sshd says: each `sshd -i` writes
its log lines to a pipe of the supervisor, which passes them on to the
Jupyter server's log unchanged and reads the ones that matter (a login, the
key that made it). The Jupyter server sees the WebSocket: who opened it, how
many bytes went each way. Metrics and audit events need both, so the two are
joined by a connection id:

* in-band, towards the route: before sshd says anything on a connection, the
  supervisor writes one line of its own, `jupyter-sshd-proxy connection ID`
  (or `jupyter-sshd-proxy refused REASON` before closing it). RFC 4253
  (4.2) lets a server send lines before its version string, and ssh clients
  skip them; the route reads and drops this one, so no client ever sees it.
  It works the same over a TCP port or a unix socket, whatever the address
  of either end.
* out of band, towards the Jupyter server: JSON lines over a unix socket
  that the Jupyter server listens on, in a directory only its user can enter
  (--reports): a login with its key, the end of a connection, a refusal by
  the limit, sshd failing to start, the number waiting to log in.

Everything here is plain Python: the supervisor imports it, and must stay
light.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
from typing import Any

PREFIX = b"jupyter-sshd-proxy "
MAX_GREETING = 128  # bytes; a longer first line is not ours
MAX_REPORT = 16 * 1024  # bytes in one JSON line; longer ones are dropped
MAX_UNSENT = 1024 * 1024  # bytes the supervisor keeps while the Jupyter server does not read
REFUSAL_REASONS = ("limit", "sshd_failing")

# sshd's own lines (LogLevel INFO and more; VERBOSE adds "Accepted key ... found at").
ACCEPTED = re.compile(
    r"Accepted (?P<method>\S+) for (?P<user>\S+) from .*? ssh2"
    r"(?:: (?P<key_type>[A-Z0-9-]+) (?P<fingerprint>SHA256:[A-Za-z0-9+/]{43})"
    # A certificate (the Hub's authority, user_ca.py): its key ID, serial and CA.
    r"(?: ID (?P<certificate_id>.*) \(serial (?P<certificate_serial>[0-9]+)\) CA [A-Z0-9-]+ "
    r"(?P<ca_fingerprint>SHA256:[A-Za-z0-9+/]{43}))?)?"
)
ACCEPTED_KEY = re.compile(
    r"Accepted key (?P<key_type>[A-Z0-9-]+) (?P<fingerprint>SHA256:[A-Za-z0-9+/]{43}) "
    r"found at (?P<file>/.+):(?P<line>[0-9]+)"
)


def greeting(connection_id: str) -> bytes:
    return PREFIX + b"connection " + connection_id.encode("ascii") + b"\r\n"


def refusal(reason: str) -> bytes:
    return PREFIX + b"refused " + reason.encode("ascii") + b"\r\n"


def read_greeting(data: bytes) -> tuple[str, str, bytes] | None:
    """("connection", id, rest) or ("refused", reason, rest) from the first bytes
    of a connection; ("", "", data) when they are not ours (SSH from the start);
    None while the first line is not complete yet."""
    end = data.find(b"\n")
    if end < 0:
        if len(data) < MAX_GREETING and PREFIX.startswith(data[: len(PREFIX)]):
            return None
        return "", "", data
    line, rest = data[:end].rstrip(b"\r"), data[end + 1 :]
    match = re.fullmatch(rb"jupyter-sshd-proxy (connection|refused) ([a-z0-9_-]{1,40})", line)
    if not match:
        return "", "", data
    return match.group(1).decode(), match.group(2).decode(), rest


def read_sshd_line(line: str) -> dict[str, Any] | None:
    """What one of sshd's log lines says about its connection, if anything."""
    match = ACCEPTED_KEY.match(line)
    if match:
        return {
            "kind": "key",
            "key_type": match["key_type"],
            "fingerprint": match["fingerprint"],
            "key_file": match["file"],
            "key_line": int(match["line"]),
        }
    match = ACCEPTED.match(line)
    if match:
        return {
            "kind": "login",
            "user": match["user"],
            "key_type": match["key_type"],
            "fingerprint": match["fingerprint"],
            "certificate_id": match["certificate_id"],
            "certificate_serial": (
                int(match["certificate_serial"]) if match["certificate_serial"] else None
            ),
        }
    return None


class Sender:
    """The supervisor's end: JSON lines to the Jupyter server's socket, never blocking.

    Lines wait in a buffer while the socket is not connected (yet, or again) or
    full; the supervisor's loop calls flush() when the socket can take more.
    Beyond MAX_UNSENT the older half is dropped, and counted."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.unsent = bytearray()
        self.dropped = 0

    def send(self, **message: Any) -> None:
        if self.path is None:
            return
        self.unsent += json.dumps(message, separators=(",", ":")).encode() + b"\n"
        if len(self.unsent) > MAX_UNSENT:  # drop the older half, whole lines
            cut = self.unsent.index(b"\n", len(self.unsent) - MAX_UNSENT // 2) + 1
            self.dropped += self.unsent[:cut].count(b"\n")
            del self.unsent[:cut]
        self.flush()

    @property
    def waiting(self) -> bool:
        """Lines are waiting for a connected socket that has room again."""
        return bool(self.unsent) and self.sock is not None

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def flush(self) -> None:
        if not self.unsent or self.path is None:
            return
        sock = self.sock or self._connect(self.path)
        if sock is None:
            return
        try:
            sent = sock.send(self.unsent, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()  # the Jupyter server is gone or restarting; try again later
            return
        del self.unsent[:sent]

    def _connect(self, path: str) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError as error:
            sock.close()
            if error.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                raise
            return None
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def listen(path: str) -> socket.socket:
    """The Jupyter server's end: a listening unix socket only this user may use."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o077)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def read_report(line: bytes) -> dict[str, Any] | None:
    """One report line as a dict with a "type", or None if it is not one."""
    if len(line) > MAX_REPORT:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message
