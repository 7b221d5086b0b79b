from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs

from .helpers import (
    PROXIES,
    Account,
    JupyterServer,
    SSHClient,
    knock,
    make_key,
    pin_host_keys,
    process_alive,
    processes_mentioning,
    wait_for,
)

# Under the home directory (from the password database, as sshd sees it): sshd's
# StrictModes refuses keys below a group- or world-writable directory, and a
# checkout may well live under one (/tmp). KEEP_TEST_WORK=1 keeps it.
RUN_DIR = (
    Path(pwd.getpwuid(os.getuid()).pw_dir)
    / ".cache"
    / "jupyter-sshd-proxy-tests"
    / f"run-{os.getpid()}"
)
STARTED_PIDS: list[int] = []  # every supervisor and sshd the tests saw


def pytest_terminal_summary(terminalreporter):
    from .helpers import WEBSOCAT_STALLS

    if WEBSOCAT_STALLS:
        terminalreporter.write_line(
            f"websocat stalled {len(WEBSOCAT_STALLS)} time(s) and the transfer was retried: "
            + "; ".join(WEBSOCAT_STALLS)
        )


# Each ProxyCommand is paired with one account instead of running every test
# for every pair: websocat with the server as this user, ours with the server
# as an unprivileged account (as on a Hub). Without root there is only this
# user, and both proxies run with it.
PROXY_OF_ACCOUNT = {"self": "websocat", "unprivileged": "jupyter-sshd-proxy"}


def _unpaired(item) -> bool:
    params = getattr(item, "callspec", None) and item.callspec.params
    if not params or "ssh" not in params:
        return False
    # A module may run websocat for only some of its tests (test_hub.py does).
    websocat_for = getattr(item.module, "WEBSOCAT_ONLY_FOR", None)
    if websocat_for is not None and params["ssh"] == "websocat":
        return item.originalname not in websocat_for
    if "account" not in params or os.getuid() != 0:
        return False
    return PROXY_OF_ACCOUNT[params["account"]] != params["ssh"]


def pytest_collection_modifyitems(config, items):
    unpaired = [item for item in items if _unpaired(item)]
    if unpaired:
        config.hook.pytest_deselected(items=unpaired)
        items[:] = [item for item in items if not _unpaired(item)]
    if os.environ.get("JUPYTER_SSHD_PROXY_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: set JUPYTER_SSHD_PROXY_SOAK=1 to run it")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def run_dir():
    RUN_DIR.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    RUN_DIR.mkdir(mode=0o700)
    yield RUN_DIR
    leftovers = [pid for pid in STARTED_PIDS if process_alive(pid)]
    leftovers += processes_mentioning(str(RUN_DIR))
    if os.environ.get("KEEP_TEST_WORK") != "1":
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


ACCOUNT_KINDS = ["self", "unprivileged"]


@pytest.fixture(scope="session", params=ACCOUNT_KINDS)
def account(request, run_dir):
    """The Jupyter server's user: ours, and (as root) a fresh system account."""
    if request.param == "self":
        yield Account.current()
        return
    if os.getuid() != 0:
        pytest.skip("running the server as another account needs root")
    account = Account.create(f"jsp-test-{os.getpid()}")
    try:
        reachable = subprocess.run(
            [sys.executable, "-c", "import jupyter_sshd_proxy, jupyter_server"],
            user=account.uid, group=account.gid, extra_groups=[], cwd="/",
            capture_output=True, check=False,
        )  # fmt: skip
        if reachable.returncode != 0:
            pytest.skip(
                f"{account.name} cannot run {sys.executable} with this package (is the "
                f"checkout or its Python under a private directory?): {reachable.stderr[-300:]!r}"
            )
        yield account
    finally:
        leftovers = processes_mentioning(str(account.home))
        account.remove()
        assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def attacker():
    """Another account on the host (as root only), removed afterwards."""
    if os.getuid() != 0:
        pytest.skip("another account needs root")
    name = f"jsp-attacker-{os.getpid()}"
    account = Account.create(name)
    try:
        yield account
    finally:
        leftovers = [pid for pid in procfs.pids() if procfs.owner(pid) == account.uid]
        account.remove()
        assert not leftovers, f"processes of {name} left behind: {leftovers}"


@pytest.fixture(scope="session")
def client_key(run_dir):
    directory = run_dir / "client"
    directory.mkdir(mode=0o700)
    return make_key(directory / "id_ed25519")


@pytest.fixture(scope="session")
def stranger_key(run_dir):
    directory = run_dir / "stranger"
    directory.mkdir(mode=0o700)
    return make_key(directory / "id_ed25519")


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


@pytest.fixture(scope="session")
def setup(account, run_dir, client_key):
    return ServerSetup(account, run_dir, client_key)


def start_sshd(server: JupyterServer) -> dict:
    """Open (and close) one WebSocket so the server starts sshd; return its status."""
    knock(server)
    status = wait_for(
        lambda: (lambda s: s if s["running"] else None)(server.status()), 15, "sshd to run"
    )
    STARTED_PIDS.append(status["pid"])
    return status


def remember_processes(server: JupyterServer) -> None:
    status = server.status()
    if status["pid"]:
        STARTED_PIDS.append(status["pid"])


@pytest.fixture(scope="module")
def server(setup):
    """A running Jupyter server whose sshd has started, with its host keys pinned."""
    with setup.running() as server:
        yield server


@pytest.fixture(scope="module", params=PROXIES)
def ssh(request, server, setup, client_key):
    """ssh through websocat, and through our own ProxyCommand."""
    return SSHClient(server, client_key, setup.known_hosts, proxy=request.param)
