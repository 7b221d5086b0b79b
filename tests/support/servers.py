"""Servers the tests start: where one account's server keeps its files, how
it starts, and the record of every supervisor and sshd seen (checked for
leftovers when the run ends, by tests/conftest.py)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

from jupyter_sshd_proxy import sshd

from .helpers import Account, JupyterServer, knock, pin_host_keys, wait_for

_STARTED_PIDS: list[int] = []  # every supervisor and sshd this test process saw


def remember_pid(pid: int) -> None:
    """Note a supervisor or sshd a test saw: the run fails if it outlives it."""
    _STARTED_PIDS.append(pid)


def started_pids() -> list[int]:
    return list(_STARTED_PIDS)


class ServerSetup:
    """Where one account's server keeps its files, and how to start it."""

    def __init__(self, account: Account, run_dir: Path, client_key: Path):
        self.account = account
        self.run_dir = run_dir
        self.token = secrets.token_hex(16)
        if account.is_current:
            # Keep our own ~/.ssh and ~/.local out of it: everything under run_dir.
            self.base = run_dir / f"server-{account.name}"
            self.base.mkdir(mode=0o700, exist_ok=True)
            self.host_key_dir = self.base / "host_keys"
            self.authorized_keys = self.base / "authorized_keys"
            self.env = {
                "JUPYTER_SSHD_PROXY_HOST_KEY_DIR": str(self.host_key_dir),
                "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES": str(self.authorized_keys),
                "JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY": "none",
                "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
                "JUPYTER_DATA_DIR": str(self.base / "data"),
                "JUPYTER_CONFIG_DIR": str(self.base / "config"),
            }
        else:
            # The defaults, as in a Hub container: ~/.ssh/authorized_keys and
            # host keys under ~/.local/share/jupyter.
            self.base = account.home
            self.host_key_dir = account.home / ".local/share/jupyter/sshd_proxy/host_keys"
            ssh_dir = account.home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            account.own(ssh_dir)
            self.authorized_keys = ssh_dir / "authorized_keys"
            self.env = {}
        self.authorized_keys.write_text(client_key.with_suffix(".pub").read_text())
        self.authorized_keys.chmod(0o600)
        account.own(self.authorized_keys)
        self.known_hosts = run_dir / f"known_hosts-{account.name}"

    @contextlib.contextmanager
    def running(self, *args: str, **env: str) -> Iterator[JupyterServer]:
        """A started server whose sshd runs, its host keys pinned; stopped afterwards."""
        server = self.server(*args, **env).start()
        try:
            start_sshd(server)
            self.pin_host_keys()
            yield server
        finally:
            server.stop()

    def pin_host_keys(self) -> None:
        pin_host_keys(self.known_hosts, "jupyter-test", self.host_key_dir)

    def server(self, *args: str, **env: str) -> JupyterServer:
        """A server (not started yet) with extra command-line args and environment."""
        return JupyterServer(
            self.account, self.run_dir, self.token, {**self.env, **env}, list(args)
        )


def start_sshd(server: JupyterServer) -> dict:
    """Open (and close) one WebSocket so the server starts sshd; return its status."""
    knock(server)
    status = wait_for(
        lambda: (lambda s: s if s["running"] else None)(server.status()), 15, "sshd to run"
    )
    remember_pid(status["pid"])
    return status


def remember_processes(server: JupyterServer) -> None:
    status = server.status()
    if status["pid"]:
        remember_pid(status["pid"])


def real_config(tmp_path, **options) -> tuple[str, Path]:
    """The real sshd, and a config rendered for it with real host keys."""
    sshd_path = sshd.find_program("sshd", "", "c.SSHDProxy.sshd_path")
    user = sshd.current_user()
    keygen = sshd.find_program("ssh-keygen", "", "c.SSHDProxy.ssh_keygen_path")
    keys = sshd.ensure_host_keys(keygen, str(tmp_path / "keys"), user)
    config = tmp_path / "sshd_config"
    config.write_text(
        sshd.render_sshd_config(
            port=2222,
            host_keys=keys,
            authorized_keys_files=[str(tmp_path / "authorized_keys")],
            user=user,
            log_level="INFO",
            version=sshd.sshd_version(sshd_path),
            **options,
        )
    )
    return sshd_path, config
