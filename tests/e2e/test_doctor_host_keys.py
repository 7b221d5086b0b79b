"""`doctor` checks the host keys sshd really presents, not only what the API says.

Was broken (issue 14, low): a server whose host-keys API served a key that
was not the one sshd presents (a .pub that no longer matched its private
key) had that key pinned by config-ssh, and doctor compared the pins with
the API only: all ok, while ssh failed with "Host key verification failed".
Here a man in the middle, in front of a real server, answers host-keys
with a key sshd does not have, as such a server did; everything else
(and the /sshd/ WebSocket to the real sshd) passes through.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import threading

import pytest

from ..support.helpers import make_key
from ..support.laptop import CLI, env_with_token, laptop_home


def run(server_url: str, home, token: str, command: str, *args: str):
    return subprocess.run(
        [CLI, command, server_url, "--name", "myhub",
         "--ssh-config", str(home / ".ssh" / "config"), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=env_with_token(token), timeout=120,
    )  # fmt: skip


def host_keys(server) -> list[dict]:
    code, body = server.request("GET", "/sshd-proxy/api/host-keys")
    assert code == 200, body
    return json.loads(body)["keys"]


def pipe(one: socket.socket, other: socket.socket, stop) -> None:
    """Bytes both ways until either side closes."""
    while not stop.is_set():
        ready, _, _ = select.select([one, other], [], [], 0.5)
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (other if sock is one else one).sendall(data)


class ManInTheMiddle:
    """127.0.0.1 in front of a real server: GET host-keys is answered with
    fake_keys, every other request and the WebSocket go through as they are."""

    def __init__(self, real_port: int, fake_keys: list[dict]):
        self.real_port = real_port
        self.body = json.dumps({"keys": fake_keys}).encode()
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.open: list[socket.socket] = []

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.open.append(sock)
            threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError), sock:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].split(b"?")[0]
            if path.endswith(b"/sshd-proxy/api/host-keys"):
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body) + self.body
                )
                return
            if b"\nupgrade: websocket" not in head.lower():
                head += b"\r\nConnection: close"  # one request per connection: each is seen
            with socket.create_connection(("127.0.0.1", self.real_port), timeout=30) as upstream:
                upstream.sendall(head + b"\r\n\r\n" + rest)
                pipe(sock, upstream, self.stop)

    def __enter__(self) -> ManInTheMiddle:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


def test_doctor_fails_when_the_api_serves_a_key_sshd_does_not_present(
    server, setup, laptop, run_dir
):
    real = host_keys(server)
    directory = run_dir / f"stale-host-key-{setup.account.name}"
    directory.mkdir(mode=0o700, exist_ok=True)
    stale_type, stale_blob = make_key(directory / "key").with_suffix(".pub").read_text().split()[:2]
    assert stale_type == "ssh-ed25519"
    fake = [{**key, "key": stale_blob} if key["type"] == "ssh-ed25519" else key for key in real]
    with ManInTheMiddle(server.port, fake) as middle:
        assert run(middle.url, laptop, server.token, "config-ssh").returncode == 0
        pins = (laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts").read_text()
        assert stale_blob in pins  # what such a server had the laptop pin
        result = run(middle.url, laptop, server.token, "doctor")
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout
    assert lines[-1].startswith("FAIL  host key  sshd presents ssh-ed25519 SHA256:")
    assert lines[-1].endswith(
        ": ssh refuses what config-ssh pins from it; the server's jupyter-sshd-proxy may "
        "serve stale .pub files (upgrade it), or something else answers on its route"
    )
    assert [line[:5].strip() for line in lines] == ["ok", "ok", "note"] + ["ok"] * 5 + ["FAIL"]
    assert server.token not in result.stdout + result.stderr


def test_doctor_fails_when_the_api_serves_a_type_sshd_does_not_present(
    server, setup, laptop, run_dir
):
    real = host_keys(server)
    directory = run_dir / f"ecdsa-host-key-{setup.account.name}"
    directory.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(directory / "key")], check=True
    )
    kind, blob = (directory / "key.pub").read_text().split()[:2]
    with ManInTheMiddle(server.port, [*real, {"type": kind, "key": blob}]) as middle:
        assert run(middle.url, laptop, server.token, "config-ssh").returncode == 0
        result = run(middle.url, laptop, server.token, "doctor")
    assert result.returncode == 1, result.stdout
    last = result.stdout.splitlines()[-1]
    assert last.startswith(
        "FAIL  host key  sshd presents no ecdsa-sha2-nistp256 host key, which the server's "
        "host-keys API serves (ssh said: Unable to negotiate with UNKNOWN port 65535: no "
        "matching host key type found."
    ), last


def test_doctor_names_the_keys_sshd_presents(server, laptop):
    assert run(server.url + "/", laptop, server.token, "config-ssh").returncode == 0
    result = run(server.url + "/", laptop, server.token, "doctor")
    assert result.returncode == 0, result.stdout
    last = result.stdout.splitlines()[-1]
    shown = ", ".join(f"{key['type']} {key['fingerprint']}" for key in host_keys(server))
    assert last.endswith(f"; sshd presents {shown}")
