"""A real JupyterHub with configurable-http-proxy, spawning each user's server as
that user's own system account (LocalProcessSpawner, the Hub running as root)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_sshd_proxy import procfs

from .helpers import (
    REPO,
    VENV_BIN,
    Account,
    devpts_lacks_tty_group,
    free_port,
    http_request,
    wait_for,
    with_private_devpts,
)

SERVICE = "sshd-proxy-tests"


def find_chp() -> str:
    """configurable-http-proxy, as `./run setup` installs it (or on PATH)."""
    local = REPO / ".npm" / "node_modules" / ".bin" / "configurable-http-proxy"
    found = str(local) if local.exists() else shutil.which("configurable-http-proxy")
    if not found:
        raise AssertionError(
            "configurable-http-proxy not found: run ./run setup (it installs it with npm)"
        )
    return found


@dataclass
class Hub:
    workdir: Path
    users: list[Account]
    extra_config: str = ""
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        names = sorted(user.name for user in self.users)
        return f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {free_port()}
c.ConfigurableHTTPProxy.command = [{find_chp()!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{self.workdir}/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set({names!r})
c.JupyterHub.cleanup_servers = True
c.Spawner.cmd = [{str(VENV_BIN / "jupyterhub-singleuser")!r}]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{{"name": {SERVICE!r}, "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "sshd-proxy-tests",
        "scopes": ["admin:users", "admin:servers", "tokens", "read:users:activity"],
        "services": [{SERVICE!r}],
    }}
]
{self.extra_config}
"""

    def start(self) -> Hub:
        self.port = free_port()
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(self.config())
        argv = [str(VENV_BIN / "jupyterhub"), "-f", str(config)]
        if devpts_lacks_tty_group():
            argv = with_private_devpts(argv)
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
        }
        with open(self.workdir / "jupyterhub.log", "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_for(self._ready, 60, "JupyterHub to answer", interval=0.3)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"JupyterHub exited:\n{self.log()[-3000:]}")
        try:
            return self.api("GET", "/hub/api/")[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return (self.workdir / "jupyterhub.log").read_text(errors="replace")

    def api(self, method: str, path: str, body=None, token: str | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"token {token or self.token}"}
        try:
            connection.request(
                method, path, body=json.dumps(body) if body is not None else None,
                headers=headers,
            )  # fmt: skip
            response = connection.getresponse()
            data = response.read()
            try:
                return response.status, (json.loads(data) if data.strip() else None)
            except ValueError:
                return response.status, data
        finally:
            connection.close()

    def user(self, name: str) -> dict:
        status, body = self.api("GET", f"/hub/api/users/{name}")
        assert status == 200, body
        return body

    def token_for(self, name: str, scopes: list[str] | None = None) -> str:
        body = {"note": "sshd-proxy tests", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        status, reply = self.api("POST", f"/hub/api/users/{name}/tokens", body)
        assert status == 201, reply
        return reply["token"]

    def start_server(self, name: str) -> None:
        status, body = self.api("POST", f"/hub/api/users/{name}/server")
        assert status in (201, 202), (status, body)
        wait_for(
            lambda: (self.user(name)["servers"].get("") or {}).get("ready"),
            90,
            f"{name}'s server to be ready",
            interval=0.3,
        )

    def stop_server(self, name: str) -> None:
        status, body = self.api("DELETE", f"/hub/api/users/{name}/server")
        assert status in (202, 204), (status, body)
        wait_for(lambda: not self.user(name)["servers"], 60, f"{name}'s server to stop", 0.3)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # What the Hub started (its proxy, services, users' servers): a Hub
        # that does not end within the timeout is killed and cannot stop them.
        # After a Hub that stopped itself, what is left is a leak for the
        # suite's checks to name, not for this to hide.
        started = {pid: procfs.cmdline(pid) for pid in procfs.descendants(self.process.pid)}
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            end_left_behind(started)


def end_left_behind(started: dict[int, str], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL, each of these processes that is still the one
    seen (same pid, same command line)."""

    def left() -> list[int]:
        return [
            pid for pid, line in started.items()
            if procfs.alive(pid) and procfs.cmdline(pid) == line
        ]  # fmt: skip

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass
class HubUserServer:
    """One user's server behind the Hub, shaped like helpers.JupyterServer for
    the tests that take a `server`."""

    hub: Hub
    account: Account
    token: str

    @property
    def url(self) -> str:
        return f"{self.hub.url}/user/{self.account.name}"

    @property
    def port(self) -> int:
        return self.hub.port

    def request(self, method: str, path: str, token: str | None = "", headers=None, body=None):
        """Through the Hub's proxy to the user's server; token "" means the user's."""
        token = self.token if token == "" else token
        path = f"/user/{self.account.name}{path}"
        return http_request(self.hub.port, method, path, token, headers, body)

    def status(self) -> dict:
        code, body = self.request("GET", "/sshd-proxy/api/status")
        assert code == 200, (code, body)
        return json.loads(body)


def home_is_ready(account: Account, public_key: Path) -> None:
    """The user's ~/.ssh/authorized_keys, as a user would have made it."""
    ssh_dir = account.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_key.read_text())
    keys.chmod(0o600)
    account.own(ssh_dir, keys)
