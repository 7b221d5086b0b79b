"""An upgrade from the original jupyter-sshd-proxy 0.3.0, as an operator does it.

The original, from PyPI, in a venv of its own, serves a user (as root: a
fresh unprivileged account; otherwise this user with a HOME of its own). A
laptop connects to it as the original's README says (websocat in an ssh
config block) and pins its host key. The original is stopped, and this
package's server runs in the same home, unconfigured. The same laptop, same
config and same known_hosts, connects with StrictHostKeyChecking=yes, by a
key in ~/.ssh/authorized_keys and by one in ~/.ssh/authorized_keys2.

Slow: it makes a venv and installs 0.3.0 with pip (from the cache after the
first time). Run alone with: ./run tests tests/e2e/test_upgrade.py
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs

from ..support.helpers import Account, free_port, make_key, processes_left, wait_for

ORIGINAL = "jupyter-sshd-proxy==0.3.0"
BASE_URL = "/user/alice/"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


@pytest.fixture(scope="module")
def original_venv():
    """0.3.0 and what it needs, from PyPI, in a venv every account can run
    (Debian's python3, as ./run uses for ours)."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    directory = Path(tempfile.mkdtemp(prefix="jsp-upgrade-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        venv = directory / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        install = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", ORIGINAL],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if install.returncode != 0:
            pytest.fail(f"pip install {ORIGINAL} failed: {install.stderr[-2000:]}")
        yield venv
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class User:
    account: Account
    home: Path  # $HOME: the account's own, or one of its own for this user

    @property
    def env(self) -> dict:
        env = {"HOME": str(self.home), "USER": self.account.name, "LOGNAME": self.account.name,
               "SHELL": "/bin/bash", "LANG": "C.UTF-8"}  # fmt: skip
        if self.account.is_current:
            # sshd reads relative keys files from the passwd entry's home, which
            # is not this HOME: name them as an operator would, with the
            # original's own variable.
            ssh = self.home / ".ssh"
            env["JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH"] = (
                f"{ssh}/authorized_keys {ssh}/authorized_keys2"
            )
        return env


@pytest.fixture(scope="module")
def user(run_dir):
    if os.getuid() != 0:
        home = run_dir / "upgrade-home"
        home.mkdir(mode=0o700)
        yield User(Account.current(), home)
        return
    account = Account.create(f"jsp-upg-{os.getpid()}")
    try:
        yield User(account, account.home)
    finally:
        leftovers = processes_left(str(account.home))
        account.remove()
        assert not leftovers, f"processes left behind: {leftovers}"


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    token: str
    log_path: Path

    def get(self, path: str) -> tuple[int, dict | None]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(
                "GET", BASE_URL + path, headers={"Authorization": f"token {self.token}"}
            )
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else None
        finally:
            connection.close()

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"jupyter server exited: {self.log()[-3000:]}")
        with contextlib.suppress(OSError):
            return self.get("api/status")[0] == 200
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as a Hub stops a server; then nothing of it may be left."""
        below = procfs.descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        try:
            wait_for(lambda: not [p for p in below if procfs.alive(p)], 15, "its processes to end")
        finally:
            for pid in below:  # only what this server started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def jupyter_server(user: User, bin_dir: Path, token: str, log_path: Path):
    """`jupyter server` from bin_dir as the user, at http://127.0.0.1:PORT/user/alice/,
    as a Hub would start it (the token in JUPYTER_TOKEN)."""
    port = free_port()
    argv = [
        str(bin_dir / "jupyter-server"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--ServerApp.base_url={BASE_URL}",
        f"--ServerApp.root_dir={user.home}",
    ]  # fmt: skip
    if user.account.uid == 0:
        argv.append("--allow-root")
    env = {**user.env, "PATH": f"{bin_dir}:{SYSTEM_PATH}", "JUPYTER_TOKEN": token}
    kwargs = {}
    if not user.account.is_current:
        kwargs = {"user": user.account.uid, "group": user.account.gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, env=env, cwd=user.home, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, **kwargs,
        )  # fmt: skip
    server = Server(process, port, token, log_path)
    try:
        wait_for(server.ready, 90, f"jupyter server on port {port}", interval=0.2)
        yield server
    finally:
        server.stop()


@dataclass
class Laptop:
    """The laptop of someone who followed the original's README."""

    directory: Path
    keys: dict  # name -> private key path

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    def config(self, server: Server, user: str, key: str) -> Path:
        """The README's Host block (ws:// to loopback), then what keeps the test off ~/.ssh."""
        path = self.directory / f"config-{key}"
        path.write_text(
            "Host 127.0.0.1\n"
            f"    User {user}\n"
            f'    ProxyCommand websocat --binary -H="Authorization: token {server.token}" '
            f"asyncstdio: ws://%h:{server.port}{BASE_URL}sshd/\n"
            "    IdentitiesOnly yes # Don't use password auth\n"
            f"    IdentityFile {self.keys[key]}\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
        )
        return path

    def ssh(self, server: Server, user: str, key: str, command: str):
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        argv = ["ssh", "-F", str(self.config(server, user, key)), "127.0.0.1", command]
        return subprocess.run(argv, env=env, capture_output=True, timeout=90, check=False)


def test_upgrading_from_the_original_keeps_every_laptop_working(
    original_venv, user, run_dir, tmp_path
):
    name = user.account.name
    laptop_dir = run_dir / "upgrade-laptop"
    laptop_dir.mkdir(mode=0o700)
    laptop = Laptop(laptop_dir, {k: make_key(laptop_dir / k) for k in ("first", "second")})

    # In the user's home, as the original's README says: ~/.ssh/authorized_keys;
    # and a second key in ~/.ssh/authorized_keys2, which sshd reads too.
    ssh_dir = user.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    for key, file in (("first", "authorized_keys"), ("second", "authorized_keys2")):
        (ssh_dir / file).write_text(laptop.keys[key].with_suffix(".pub").read_text())
        (ssh_dir / file).chmod(0o600)
        user.account.own(ssh_dir / file)
    user.account.own(ssh_dir)

    token = os.urandom(16).hex()
    with jupyter_server(user, original_venv / "bin", token, run_dir / "upgrade-0.3.0.log") as old:
        # The first connection starts the original's sshd, which makes its host key.
        old_key = ssh_dir / "jupyter_sshd_hostkey"
        laptop.ssh(old, name, "first", "true")
        wait_for(lambda: old_key.with_suffix(".pub").exists(), 60, "the original's host key")
        # The laptop pins it, as its first "yes" did.
        pinned = f"127.0.0.1 {' '.join(old_key.with_suffix('.pub').read_text().split()[:2])}\n"
        laptop.known_hosts.write_text(pinned)
        for key in ("first", "second"):
            result = laptop.ssh(old, name, key, "echo original-$USER")
            assert result.stdout == f"original-{name}\n".encode(), result.stderr.decode()

    # The upgrade: this package in the same home; nothing configured.
    ours_bin = Path(sys.executable).parent
    with jupyter_server(user, ours_bin, token, run_dir / "upgrade-ours.log") as new:
        for key in ("first", "second"):
            result = laptop.ssh(new, name, key, "echo upgraded-$USER")
            assert result.stdout == f"upgraded-{name}\n".encode(), (
                result.stderr.decode() + new.log()[-3000:]
            )
        assert laptop.known_hosts.read_text() == pinned  # nothing to accept, nothing changed
        # What config-ssh pins from now on includes the key the laptop knows.
        code, body = new.get("sshd-proxy/api/host-keys")
        assert code == 200, body
        served = {f"127.0.0.1 {key['type']} {key['key']}\n" for key in body["keys"]}
        assert pinned in served
        found = "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH and " if user.account.is_current else ""
        notice = f"upgraded from the original jupyter-sshd-proxy (found {found}its host key"
        assert new.log().count(f"{notice} {old_key},") == 1
        status = new.get("sshd-proxy/api/status")[1]
        assert status["running"], status
    assert old_key.exists(), "the original's key is kept, never replaced"
