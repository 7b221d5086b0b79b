"""sshd starts only when the /sshd/ route is known to be guarded, and SSH can be
turned off with one switch.

The route's guard (the terminal check, flow control) is the server
extension's; sshd is started by jupyter-server-proxy's entry point. The entry
point's command therefore refuses unless the extension's handler asks, after
its request passed the check. These tests run what an operator would do: the
extension disabled with `jupyter server extension disable`, under an
authorizer that refuses terminals; and c.SSHDProxy.policy = "off".
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from tornado import web

from ..support.helpers import SSHClient, environment_of_its_own, server_processes

TESTS_DIR = Path(__file__).resolve().parent.parent / "support"  # no_execute_authorizer
NO_EXECUTE = "--ServerApp.authorizer_class=no_execute_authorizer.ReadWriteOnly"
NOT_GUARDED = (
    "jupyter-sshd-proxy: the /sshd/ route is not guarded, so sshd is not started: the server "
    "extension jupyter_sshd_proxy is not loaded (disabled, or it failed: see the lines above); "
    "enable it with: jupyter server extension enable jupyter_sshd_proxy, or turn SSH off with "
    "c.SSHDProxy.policy = 'off' (JUPYTER_SSHD_PROXY_POLICY=off)"
)
OFF = (
    "SSH is off on this server (JUPYTER_SSHD_PROXY_POLICY is 'off'); ask its operator to turn it on"
)


def our_lines(result: subprocess.CompletedProcess) -> list[str]:
    """What our ProxyCommand said (ssh adds its own line)."""
    lines = result.stderr.decode(errors="replace").splitlines()
    return [line for line in lines if line.startswith("jupyter-sshd-proxy: ")]


def test_with_the_extension_disabled_ssh_reaches_no_shell(setup, client_key, tmp_path):
    """`jupyter server extension disable jupyter_sshd_proxy` (in an environment of
    its own: the command writes into the environment's config), and an
    authorizer that refuses terminals: jupyter-server-proxy's own handler serves
    /sshd/, and the entry point's command refuses to start sshd (on main, ssh
    got a shell)."""
    if not setup.account.is_current:
        pytest.skip("the environment is this user's")
    python = environment_of_its_own(tmp_path / "env")
    disabled = subprocess.run(
        [python, "-m", "jupyter_server.extension.serverextension", "disable",
         "jupyter_sshd_proxy"],
        env={**os.environ, **setup.env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Extension successfully disabled" in disabled.stderr, disabled.stderr
    server = setup.server(NO_EXECUTE, PYTHONPATH=str(TESTS_DIR))
    server.python = python
    server.start()
    try:
        # The extension is off: its API is not there.
        assert server.request("GET", "/sshd-proxy/api/status")[0] == 404
        # The host keys pinned, so that a shell would be reached if sshd started.
        from jupyter_sshd_proxy import sshd

        sshd.ensure_host_keys("ssh-keygen", str(setup.host_key_dir), sshd.current_user())
        setup.pin_host_keys()
        result = SSHClient(server, client_key, setup.known_hosts, "jupyter-sshd-proxy").ssh(
            "echo", "shell"
        )
        assert b"shell" not in result.stdout, "ssh reached a shell"
        assert result.returncode == 255
        assert our_lines(result) == [
            f"jupyter-sshd-proxy: the server at ws://127.0.0.1:{server.port}/sshd/ closed the "
            "connection at once; see the Jupyter server's log"
        ]
        assert server_processes(server) == [], "something was started for the route"
        assert server.log().count(NOT_GUARDED) == 1, server.log()[-3000:]
    finally:
        server.stop()


def test_the_command_refuses_outside_a_guarded_request(caplog):
    """The spec's command, called from anywhere but the guarded route's request
    (jupyter-server-proxy's own handler, other code), starts nothing."""
    from jupyter_sshd_proxy.server import SSHDService
    from jupyter_sshd_proxy.settings import SSHDProxy

    service = SSHDService(SSHDProxy(), logging.getLogger("test-guard"))
    command = service.process_spec()["command"]
    with caplog.at_level(logging.ERROR, logger="test-guard"), pytest.raises(web.HTTPError) as no:
        command("/nonexistent/socket")
    assert no.value.status_code == 503
    assert [record.getMessage() for record in caplog.records] == [NOT_GUARDED]
    assert service.last_error == NOT_GUARDED.removeprefix("jupyter-sshd-proxy: ")
    assert service.state_dir is None  # nothing was prepared


@pytest.fixture(scope="module")
def off_server(setup):
    server = setup.server(JUPYTER_SSHD_PROXY_POLICY="off").start()
    try:
        yield server
    finally:
        server.stop()


def test_ssh_off_the_route_refuses_with_the_reason(off_server, setup, client_key):
    result = SSHClient(off_server, client_key, setup.known_hosts, "jupyter-sshd-proxy").ssh("true")
    assert result.returncode == 255
    assert our_lines(result) == [
        f"jupyter-sshd-proxy: the server refused (403) the sshd route at "
        f"ws://127.0.0.1:{off_server.port}/sshd/: {OFF}"
    ]
    assert server_processes(off_server) == [], "something was started while SSH is off"


def test_ssh_off_status_and_log_say_so(off_server):
    status = off_server.status()
    assert status["policy"] == "off"
    assert status["off"] == OFF
    assert status["running"] is False
    assert status["last_error"] is None
    assert off_server.log().count(f"jupyter-sshd-proxy: {OFF}") == 1


def test_ssh_off_has_no_launcher_tile(off_server):
    code, body = off_server.request("GET", "/server-proxy/servers-info")
    assert code == 200
    (sshd,) = [entry for entry in json.loads(body)["server_processes"] if entry["name"] == "sshd"]
    assert sshd["launcher_entry"]["enabled"] is False


def test_ssh_off_from_the_config_names_the_setting():
    from jupyter_sshd_proxy.server import SSHDService
    from jupyter_sshd_proxy.settings import SSHDProxy

    service = SSHDService(SSHDProxy(policy="off"), logging.getLogger("test-guard"))
    assert service.off_reason() == (
        "SSH is off on this server (SSHDProxy.policy is 'off'); ask its operator to turn it on"
    )
    with pytest.raises(web.HTTPError):
        service.process_spec()["command"]("/nonexistent/socket")
    assert service.last_error == service.off_reason()
