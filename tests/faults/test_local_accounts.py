"""Another account on the server's host, as an attacker: it must not reach sshd.

The route reaches the supervisor through a unix socket in a directory of mode
0700 (jupyter-server-proxy makes it with mkdtemp), so another account can
neither connect (log in, hold the places of connections waiting to log in,
count among the sessions, make the server look active) nor take the socket's
name first, even while the supervisor is being restarted. Each test runs a
real second account (useradd, removed afterwards) against a real server, and
each failed on main, where the route went to a loopback TCP port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..support.faults import start_supervisor
from ..support.helpers import Account, SSHClient, wait_for
from ..support.servers import remember_pid

# What the attacker runs, as itself: stdlib only, with the system's Python.
ATTACKER = r"""
import errno, json, os, socket, sys, time
address, action, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

def target():
    if address.startswith("/"):
        return socket.AF_UNIX, address
    host, port = address.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))

family, where = target()

def connect():
    sock = socket.socket(family)
    sock.settimeout(5)
    sock.connect(where)
    return sock

if action == "connect":
    held = []
    errors = set()
    for _ in range(count):
        try:
            held.append(connect())
        except OSError as error:
            errors.add(errno.errorcode.get(error.errno, str(error)))
    print(json.dumps({"connected": len(held), "errors": sorted(errors)}), flush=True)
    sys.stdin.read()  # hold them until told to stop
elif action == "squat":
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + count
    while time.monotonic() < deadline:
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            if family == socket.AF_UNIX:
                try:
                    os.unlink(where)
                except OSError:
                    pass
            sock.bind(where)
            sock.listen(8)
        except OSError:
            sock.close()
            time.sleep(0.01)
            continue
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            conn, _ = sock.accept()
            got = conn.recv(64)
        except OSError:
            got = b""
        print(json.dumps({"bound": True, "received": got.decode("latin-1")}), flush=True)
        sys.exit(0)
    print(json.dumps({"bound": False}), flush=True)
"""


@pytest.fixture(scope="module")
def owner(setup):
    """The server's user (this one: the attacker is the other account)."""
    if not setup.account.is_current:
        pytest.skip("the attacker is measured against a server of this user")
    with setup.running() as server:
        yield server


def address_of(server) -> str:
    """Where the route reaches sshd: the unix socket (on main, a TCP port)."""
    status = server.status()
    return status.get("socket") or f"127.0.0.1:{status['port']}"


def as_attacker(account: Account, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        ["/usr/bin/python3", "-c", ATTACKER, *args],
        user=account.uid, group=account.gid, extra_groups=[], cwd="/",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kwargs,
    )  # fmt: skip


def owner_gets_in(server, setup, client_key) -> None:
    ssh = SSHClient(server, client_key, setup.known_hosts, "jupyter-sshd-proxy")
    result = ssh.ssh("echo", "owner")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"owner\n"


def test_another_account_cannot_connect_to_sshd(owner, attacker):
    attempt = as_attacker(attacker, address_of(owner), "connect", "1")
    try:
        said = json.loads(attempt.stdout.readline())
    finally:
        attempt.communicate(timeout=30)
    assert said == {"connected": 0, "errors": ["EACCES"]}


def test_64_attempts_of_another_account_leave_the_owner_in(owner, attacker, setup, client_key):
    """The attacker tries 64 connections and holds what it gets; the owner logs
    in, and sessions counts no connection of the attacker's (on main: 64 held,
    the owner got "closed the connection at once")."""
    attempt = as_attacker(attacker, address_of(owner), "connect", "64")
    try:
        said = json.loads(attempt.stdout.readline())
        assert said["connected"] == 0, said
        for _ in range(3):
            owner_gets_in(owner, setup, client_key)
        assert owner.status()["sessions"] == 0
    finally:
        attempt.communicate(timeout=30)


def test_another_account_cannot_take_the_socket_while_the_supervisor_restarts(
    owner, attacker, setup, client_key
):
    """The attacker tries to take sshd's address for 15 s, while the supervisor
    is killed and started again; the owner then reaches the real sshd (its host
    key pinned), not the attacker (on main, the attacker bound the port)."""
    squat = as_attacker(attacker, address_of(owner), "squat", "15")
    try:
        assert json.loads(squat.stdout.readline()) == {"ready": True}
        supervisor = owner.status()["pid"]
        os.kill(supervisor, signal.SIGKILL)
        wait_for(
            lambda: owner.status()["pid"] not in (None, supervisor) and owner.status()["running"],
            30,
            "a new supervisor",
        )
        remember_pid(owner.status()["pid"])
        time.sleep(1)  # the attacker keeps trying meanwhile
        owner_gets_in(owner, setup, client_key)
        said = json.loads(squat.stdout.readline())
    finally:
        squat.kill()
        squat.communicate(timeout=30)
    assert said == {"bound": False}


@pytest.mark.parametrize("target", ["socket", "relay"])
def test_a_connection_from_another_account_is_closed_even_if_it_gets_through(
    attacker, setup, tmp_path, target
):
    """The third wall: were the directory and the socket opened up (by mistake,
    by hand), the supervisor still closes a connection from another account at
    once (SO_PEERCRED), starts no sshd (or relay) for it, and says so in one
    line that names the socket it came to."""
    if not setup.account.is_current:
        pytest.skip("runs the supervisor as this user")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    # Where the attacker could reach it once opened up (tmp_path's parents are 0700).
    socket_dir = Path(tempfile.mkdtemp(prefix="jsp-socket-"))
    socket_path = socket_dir / "socket"
    supervisor = start_supervisor(setup, state, socket_path)
    try:
        wait_for(lambda: (state / "status.json").exists() and json.loads(
            (state / "status.json").read_text())["serving"], 15, "the supervisor")  # fmt: skip
        socket_dir.chmod(0o711)
        target_path = socket_dir / target
        target_path.chmod(0o666)
        attempt = as_attacker(attacker, str(target_path), "connect", "1")
        said = json.loads(attempt.stdout.readline())
        assert said["connected"] == 1  # the kernel let it through; the supervisor must not
        time.sleep(1)
        assert [p for p in _children(supervisor.pid)] == [], "a child was started for it"
        attempt.communicate(timeout=30)
    finally:
        supervisor.terminate()
        _, stderr = supervisor.communicate(timeout=30)
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert stderr.decode().splitlines() == [
        f"jupyter-sshd-proxy: closed a connection to {target_path} from uid {attacker.uid}, "
        "another account (1 so far); check the permissions of its directory"
    ]


def _children(pid: int) -> list[int]:
    from jupyter_sshd_proxy import procfs

    return [child for child in procfs.children(pid) if procfs.alive(child)]


def test_the_socket_is_private_and_goes_with_the_server(setup):
    with setup.running() as server:
        path = Path(server.status()["socket"])
        directory = path.parent
        info = directory.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (setup.account.uid, 0o700)
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not directory.exists(), "the socket's directory was left behind"
