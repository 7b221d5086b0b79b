"""ssh needs the right to open a terminal: `execute` on `terminals`.

A real Jupyter server runs with an authorizer that allows reading and writing
but denies executing (jupyter_server's read/write-only example). It refuses a
terminal, so it must refuse the /sshd/ WebSocket and any change of the
authorized keys (a key is a shell), while reading the status and the keys
still works. With the default authorizer everything works.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from tornado import web

from ..support.api import call
from ..support.helpers import first_answer_line, make_key

TESTS_DIR = Path(__file__).resolve().parent.parent / "support"  # no_execute_authorizer
NO_EXECUTE = "--ServerApp.authorizer_class=no_execute_authorizer.ReadWriteOnly"


def upgrade_status(server, path: str = "/sshd/") -> int:
    """The status of a raw WebSocket upgrade request (101 when it is granted)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        f"Authorization: token {server.token}\r\n"
        "\r\n"
    )
    return int(first_answer_line(server.port, request.encode()).split(b" ", 2)[1])


@pytest.fixture(scope="module")
def no_execute_server(setup):
    """A server whose authorizer allows read and write, never execute."""
    server = setup.server(NO_EXECUTE, PYTHONPATH=str(TESTS_DIR)).start()
    try:
        yield server
    finally:
        server.stop()


def test_without_execute_the_ssh_websocket_is_refused(no_execute_server):
    assert upgrade_status(no_execute_server) == 403
    status = no_execute_server.status()
    assert status["running"] is False, "sshd was started for a refused upgrade"


def test_without_execute_keys_cannot_be_added_or_removed(no_execute_server, setup, run_dir):
    before = setup.authorized_keys.read_bytes()
    key = make_key(run_dir / f"no-execute-{setup.account.name}")
    line = key.with_suffix(".pub").read_text().strip()
    try:
        status, body = call(no_execute_server, "POST", "/authorized-keys", {"key": line})
        assert (status, body["message"]) == (403, (
            "adding or removing a key needs the right to open a terminal (execute on "
            "terminals), which this user does not have"
        ))  # fmt: skip
        listed = call(no_execute_server, "GET", "/authorized-keys")[1]["keys"]
        query = "?fingerprint=" + urllib.parse.quote(listed[0]["fingerprint"], safe="")
        assert call(no_execute_server, "DELETE", "/authorized-keys" + query)[0] == 403
        assert setup.authorized_keys.read_bytes() == before
    finally:
        setup.authorized_keys.write_bytes(before)


@pytest.mark.parametrize("path", ["/status", "/host-keys", "/authorized-keys"])
def test_without_execute_reading_still_works(no_execute_server, path):
    status, body = call(no_execute_server, "GET", path)
    assert status == 200, body


def test_with_the_default_authorizer_the_upgrade_is_granted(server):
    assert upgrade_status(server) == 101


def test_install_names_a_missing_route_in_one_error_line(caplog):
    """Without jupyter-server-proxy's /sshd/ rule there is nothing to guard: say so."""
    from jupyter_sshd_proxy import route

    app = web.Application([])
    log = logging.getLogger("test-route")
    with caplog.at_level(logging.ERROR, logger="test-route"):
        problem = route.install(app, "/base/", log)
    assert problem == (
        "jupyter-server-proxy's /base/sshd/ route was not found, so "
        "sshd will not be started (it would not be limited to users who may open a terminal); "
        "check that jupyter_server_proxy is installed and enabled (jupyter server extension list)"
    )
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [f"jupyter-sshd-proxy: {problem}"]


def test_an_unguarded_route_never_starts_sshd():
    """Fail closed: if the route could not be guarded, sshd is never started."""
    from jupyter_sshd_proxy import route
    from jupyter_sshd_proxy.server import SSHDService
    from jupyter_sshd_proxy.settings import SSHDProxy

    service = SSHDService(SSHDProxy(), logging.getLogger("test-route"))
    service.unguarded = route.install(web.Application([]), "/", service.log)
    with pytest.raises(web.HTTPError) as refused:
        service.start_command("/nonexistent/socket")
    assert refused.value.status_code == 503
    assert service.last_error == service.unguarded
    assert service.status()["last_error"] == service.unguarded
    assert service.state_dir is None  # nothing was prepared


def test_config_ssh_says_the_user_may_not_open_a_terminal(no_execute_server, tmp_path):
    from ..support.laptop import CLI

    server = no_execute_server
    config = tmp_path / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    result = subprocess.run(
        [CLI, "config-ssh", server.url + "/", "--name", "myhub", "--ssh-config", str(config)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={**os.environ, "JUPYTER_SSHD_PROXY_TOKEN": server.token},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "jupyter-sshd-proxy: the server refused (403) the sshd-proxy authorized-keys endpoint at "
        f"{server.url}/: adding or removing a key needs the right to open a terminal (execute "
        "on terminals), which this user does not have"
    )
    assert not config.exists()
