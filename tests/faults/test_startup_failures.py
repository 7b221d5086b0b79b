"""Whatever fails while sshd is prepared or started is said, in one line, in the
log, in the status's last_error and by the client; and nothing about the
server's environment disables SSH for good.

On main, a variable that was not UTF-8 (with pass_environment on, the default)
and a full or read-only runtime directory each disabled SSH with last_error
null and a traceback in the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path

import pytest
from tornado import web

from ..support.helpers import SSHClient
from ..support.servers import start_sshd

ODD = "\udcff\udcfe not UTF-8"  # the bytes ff fe, as Python holds them


def our_lines(result: subprocess.CompletedProcess) -> list[str]:
    lines = result.stderr.decode(errors="replace").splitlines()
    return [line for line in lines if line.startswith("jupyter-sshd-proxy: ")]


def test_a_variable_that_is_not_utf8_reaches_the_session_intact(setup, client_key):
    with setup.running(ODD_BYTES=ODD) as server:
        ssh = SSHClient(server, client_key, setup.known_hosts, "jupyter-sshd-proxy")
        result = ssh.ssh('printf %s "$ODD_BYTES" | od -An -tx1')
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [b"ff", b"fe", *(b"%02x" % c for c in b" not UTF-8")]
        assert server.status()["last_error"] is None


@contextlib.contextmanager
def small_runtime_dir(base: Path):
    """A runtime directory on a file system of its own (tmpfs, 1 MiB), unmounted after."""
    if os.getuid() != 0:
        pytest.skip("mounting a file system needs root")
    directory = base / "small-runtime"
    directory.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        directory.rmdir()


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as stream, contextlib.suppress(OSError):
        while True:
            stream.write(b"\0" * 65536)
            stream.flush()
    return filler


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_a_runtime_directory_that_cannot_be_written(trouble, setup, client_key, tmp_path):
    """sshd's configuration cannot be written: last_error and the client say why
    and what to do; once the directory is writable again, ssh works, with no
    restart."""
    if not setup.account.is_current:
        pytest.skip("the runtime directory is this user's")
    with small_runtime_dir(tmp_path) as runtime:
        server = setup.server(JUPYTER_RUNTIME_DIR=str(runtime)).start()
        try:
            if trouble == "full":
                filler = fill(runtime)
                reason, fix = "No space left on device", "free space there"
            else:
                subprocess.run(["mount", "-o", "remount,ro", str(runtime)], check=True)
                reason, fix = "Read-only file system", "make it writable"
            problem = (
                f"cannot write sshd's configuration into the Jupyter runtime directory "
                f"{runtime}: {reason}; {fix}, or set JUPYTER_RUNTIME_DIR to a writable "
                "directory, then connect again"
            )
            ssh = SSHClient(server, client_key, setup.known_hosts, "jupyter-sshd-proxy")
            result = ssh.ssh("true")
            assert result.returncode == 255
            assert our_lines(result) == [
                f"jupyter-sshd-proxy: sshd could not start on the server: {problem}"
            ]
            assert server.status()["last_error"] == problem
            assert server.log().count(f"jupyter-sshd-proxy: {problem}") >= 1
            assert "Traceback" not in server.log()
            if trouble == "full":
                filler.unlink()
            else:
                subprocess.run(["mount", "-o", "remount,rw", str(runtime)], check=True)
            start_sshd(server)
            setup.pin_host_keys()
            result = ssh.ssh("echo", "back")
            assert result.stdout == b"back\n", result.stderr
            assert server.status()["last_error"] is None
        finally:
            server.stop()


def test_an_unexpected_failure_becomes_last_error_with_its_cause(monkeypatch, caplog):
    """A failure that is no error of this package's (a bug) is one line too."""
    from jupyter_sshd_proxy import server as server_module
    from jupyter_sshd_proxy import upstream
    from jupyter_sshd_proxy.route import SSHDRouteHandler
    from jupyter_sshd_proxy.settings import SSHDProxy

    def broken(service, socket_path):
        raise KeyError("HOME")

    monkeypatch.setattr(server_module, "prepare_sshd", broken)
    service = server_module.SSHDService(SSHDProxy(), logging.getLogger("test-startup"))
    route = SSHDRouteHandler.__new__(SSHDRouteHandler)  # a request that passed the check
    route.terminal_allowed = True
    token = upstream._starting.set(route)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="test-startup"),
            pytest.raises(web.HTTPError) as refused,
        ):
            service.process_spec()["command"]("/nonexistent/socket")
    finally:
        upstream._starting.reset(token)
    problem = (
        "sshd cannot be prepared: KeyError: 'HOME'; this is a bug in jupyter-sshd-proxy, "
        "please report it with the Jupyter server's log"
    )
    assert refused.value.status_code == 503
    assert service.last_error == problem
    assert service.status()["last_error"] == problem
    assert [record.getMessage() for record in caplog.records] == [f"jupyter-sshd-proxy: {problem}"]
