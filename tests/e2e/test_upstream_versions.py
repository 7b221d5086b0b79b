"""The lowest and the newest jupyter-server-proxy that jupyter-sshd-proxy
supports, and the last one it does not: real releases from PyPI, each in an
environment of its own (its own venv with that release, above the packages of
this one), each under a real Jupyter server.

The supported ones carry ssh; 4.2.0, which has no raw socket proxy (and which
`>=4.2` allowed), starts no sshd: one line in the log says why, the status
says it too, and so does the client.
"""

from __future__ import annotations

import subprocess

import pytest

from jupyter_sshd_proxy import upstream

from ..support.helpers import SSHClient, environment_of_its_own, server_processes
from ..support.servers import start_sshd

LOWEST = upstream.FIRST_SUPPORTED
NEWEST = "4.6.0"  # the newest release when this was written: raise it with each release
UNSUPPORTED = "4.2.0"  # the last release without the raw socket proxy


@pytest.fixture(scope="module")
def environments(run_dir):
    made: dict[str, str] = {}

    def environment(version: str) -> str:
        if version not in made:
            made[version] = environment_of_its_own(
                run_dir / f"jupyter-server-proxy-{version}", f"jupyter-server-proxy=={version}"
            )
        return made[version]

    return environment


def installed(python: str) -> tuple[str, str]:
    """(the version, the contract items broken) as that environment sees them."""
    script = (
        "from jupyter_sshd_proxy import upstream; "
        "print(upstream.version()); print(','.join(upstream.broken()))"
    )
    lines = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return lines[0], lines[1] if len(lines) > 1 else ""


@pytest.mark.parametrize("version", [LOWEST, NEWEST])
def test_a_supported_release_carries_ssh(version, environments, setup, client_key):
    if not setup.account.is_current:
        pytest.skip("the environments are this user's")
    python = environments(version)
    assert installed(python) == (version, "")
    server = setup.server()
    server.python = python
    server.start()
    try:
        start_sshd(server)
        setup.pin_host_keys()
        result = SSHClient(server, client_key, setup.known_hosts, "jupyter-sshd-proxy").ssh(
            "echo", "through", version
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"through {version}\n".encode()
    finally:
        server.stop()


def test_a_release_without_the_raw_socket_proxy_starts_no_sshd(environments, setup, client_key):
    if not setup.account.is_current:
        pytest.skip("the environments are this user's")
    python = environments(UNSUPPORTED)
    assert installed(python) == (
        UNSUPPORTED,
        "jupyter_server_proxy.rawsocket.SuperviseAndRawSocketHandler",
    )
    problem = (
        f"jupyter-server-proxy {UNSUPPORTED} has no raw socket proxy (ModuleNotFoundError: No "
        "module named 'jupyter_server_proxy.rawsocket'), so the /sshd/ route cannot be guarded "
        f"and sshd is not started; install jupyter-server-proxy>={LOWEST}"
    )
    server = setup.server()
    server.python = python
    server.start()
    try:
        assert server.log().count(f"jupyter-sshd-proxy: {problem}") == 1
        status = server.status()
        assert status["running"] is False
        assert status["last_error"] == problem
        result = SSHClient(server, client_key, setup.known_hosts, "jupyter-sshd-proxy").ssh("true")
        assert result.returncode == 255
        ours = [
            line
            for line in result.stderr.decode().splitlines()
            if line.startswith("jupyter-sshd-proxy: ")
        ]
        assert ours == [f"jupyter-sshd-proxy: sshd could not start on the server: {problem}"]
        assert server_processes(server) == [], "something was started for the route"
    finally:
        server.stop()
