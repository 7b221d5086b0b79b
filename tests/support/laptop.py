"""The laptop's side in the tests: a ~/.ssh of its own, our command line run
with a clean environment, and Jupyter servers that are not at http://HOST/.

A laptop home lives in a short directory under /tmp: ssh's control sockets
(connection sharing) live below it, and a unix socket path must stay under
104 bytes, which pytest's tmp_path does not.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .helpers import VENV_BIN, JupyterServer

CLI = str(VENV_BIN / "jupyter-sshd-proxy")

EXISTING_CONFIG = (
    "# my own settings\n"
    "Host work\n"
    "    HostName work.example.org\n"
    "    User me\n"
    "\n"
    "Host *\n"
    "    ServerAliveInterval 60\n"
)


def env_with_token(token: str | None, **more: str) -> dict:
    """Our environment without any token variable, then JUPYTER_SSHD_PROXY_TOKEN=token."""
    env = {k: v for k, v in os.environ.items() if "TOKEN" not in k and k != "SSL_CERT_FILE"}
    if token is not None:
        env["JUPYTER_SSHD_PROXY_TOKEN"] = token
    env.update(more)
    return env


def run_cli(*args: str, token: str | None, timeout: float = 60, **env: str):
    """`jupyter-sshd-proxy ARGS` as a user runs it; the token in the environment."""
    return subprocess.run(
        [CLI, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=env_with_token(token, **env), timeout=timeout,
    )  # fmt: skip


@contextlib.contextmanager
def laptop_home() -> Iterator[Path]:
    """A fresh laptop home with ~/.ssh/config holding EXISTING_CONFIG, removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="jsp-", dir="/tmp"))
    try:
        (home / ".ssh").mkdir(mode=0o700)
        (home / ".ssh" / "config").write_text(EXISTING_CONFIG)
        (home / ".ssh" / "config").chmod(0o600)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def snapshot(home: Path) -> dict:
    """Every file and link below home, with its bytes (or its link target)."""
    found = {}
    for path in sorted(home.rglob("*")):
        if path.is_symlink():
            found[path] = ("link", os.readlink(path))
        elif path.is_file():
            found[path] = ("file", path.read_bytes())
    return found


@dataclass
class ServerAt(JupyterServer):
    """A Jupyter server under a base URL (/user/NAME/), over TLS when ca_file is given."""

    base_path: str = "/"
    ca_file: Path | None = None

    def request(self, method: str, path: str, token: str | None = "", headers=None):
        if self.ca_file is None:
            return super().request(method, self.base_path.rstrip("/") + path, token, headers)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=30, context=context
        )
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"token {self.token if token == '' else token}"
        try:
            connection.request(method, self.base_path.rstrip("/") + path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    @property
    def url(self) -> str:
        scheme = "http" if self.ca_file is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}{self.base_path.rstrip('/')}"
