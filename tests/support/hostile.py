"""A hostile server on 127.0.0.1: it answers whatever a test tells it to.

The laptop side must not trust a Jupyter server (it may be compromised, or
an attacker's): every answer of this one is chosen to break the client. It
is the standard library's HTTP server in a thread, with a table of answers
by (method, path); it also accepts a WebSocket upgrade on .../sshd/ and
closes the connection at once, as a server whose sshd cannot start does.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# The REST API's paths, as the client calls them.
STATUS = "/sshd-proxy/api/status"
HOST_KEYS = "/sshd-proxy/api/host-keys"
AUTHORIZED_KEYS = "/sshd-proxy/api/authorized-keys"

# A public key (its private half was thrown away): what a server sends as a host key.
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAID/djou8gwoY/VQFm0ljQSQHmyxaUBmIdgVqapDMgm+f"

# What must never reach the user's terminal from a server's answer.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})

    @classmethod
    def json(cls, value, status: int = 200) -> Answer:
        return cls(status, json.dumps(value).encode())


class HostileServer:
    """Answers from self.answers[(method, path)]; 404 for anything else."""

    def __init__(self):
        self.answers: dict[tuple[str, str], Answer] = {}
        self.requests: list[tuple[str, str]] = []
        self.websocket_upgrades = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # quiet
                pass

            def answer(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append((self.command, path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if self.headers.get("Upgrade", "").lower() == "websocket" and (
                    ("GET", path) not in server.answers
                ):
                    return self.upgrade_and_close()
                answer = server.answers.get((self.command, path), Answer(404, b"{}"))
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def upgrade_and_close(self) -> None:
                server.websocket_upgrades += 1
                key = self.headers["Sec-WebSocket-Key"] + WEBSOCKET_GUID
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.close_connection = True

            do_GET = do_POST = do_DELETE = answer

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
