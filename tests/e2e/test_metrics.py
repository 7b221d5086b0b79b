"""The metrics on the Jupyter server's own /metrics, scraped after real ssh sessions.

Each test runs once: as root, with the server as the unprivileged account
(as in a Hub container); otherwise as this user.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from jupyter_sshd_proxy.metrics import METRICS, exposed_names

from ..support.helpers import SSHClient, sshd_processes, wait_for

MiB = 1024 * 1024


@pytest.fixture
def once(account):
    if account.is_current and os.getuid() == 0:
        pytest.skip("runs once, with the server as the unprivileged account")


@pytest.fixture(scope="module")
def metered(setup):
    """A server that lets one connection at a time wait to log in (and one more
    wait for its turn), for at most 5 s."""
    with setup.running(
        JUPYTER_SSHD_PROXY_MAX_UNAUTHENTICATED="1",
        JUPYTER_SSHD_PROXY_EXTRA_OPTIONS="LoginGraceTime 5",
    ) as server:
        yield server


@pytest.fixture
def ssh(metered, setup, client_key):
    return SSHClient(metered, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Our samples on /metrics: (name, sorted labels) -> value."""
    code, body = server.request("GET", "/metrics")
    assert code == 200, body[:300]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("jupyter_sshd_proxy_")
    }


def quiet(server) -> dict[tuple[str, tuple], float]:
    """The metrics once earlier connections (the one that started sshd, the
    readiness probe) have ended and been counted: no sshd left, and two scrapes
    half a second apart agree."""
    wait_for(lambda: not sshd_processes(server), 15, "earlier connections to end")

    def steady():
        first = scrape(server)
        time.sleep(0.5)
        return first if scrape(server) == first else None

    return wait_for(steady, 15, "the metrics to settle")


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def settled(server, before, **expected_deltas):
    """Scrape until no connection is open or waiting, and the login counters
    moved as expected."""

    last = {}

    def check():
        now = last["samples"] = scrape(server)
        if value(now, "jupyter_sshd_proxy_connections") != 0:
            return None
        if value(now, "jupyter_sshd_proxy_waiting_connections") != 0:
            return None
        for result, delta in expected_deltas.items():
            name = "jupyter_sshd_proxy_logins_total"
            if value(now, name, result=result) - value(before, name, result=result) != delta:
                return None
        return now

    try:
        return wait_for(check, 15, f"the logins to be counted ({expected_deltas})", 0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}; before {before}, now {last['samples']}") from None


def test_every_metric_is_exposed_with_its_type_and_help(once, metered):
    code, body = metered.request("GET", "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for metric in METRICS:
        family = families[metric.name]
        assert family.type == metric.kind
        assert family.documentation == metric.help
        if metric.kind == "counter":
            assert {s.name for s in family.samples} == {metric.name + "_total"}
        for sample in family.samples:
            assert set(sample.labels) == set(metric.labels)
    for name in exposed_names():
        assert name.startswith("jupyter_sshd_proxy_")
    assert "jupyter_sshd_proxy_bytes_total" in exposed_names()  # base unit, _total


def test_metrics_without_a_token_are_refused(once, metered):
    """jupyter_server's default: /metrics needs the token like the API."""
    assert metered.request("GET", "/metrics", token=None)[0] == 403


def test_logins_and_bytes_after_real_sessions(once, metered, ssh, stranger_key):
    before = quiet(metered)
    download = ssh.ssh(f"head -c {MiB} /dev/zero")
    assert download.returncode == 0, download.stderr
    assert len(download.stdout) == MiB
    upload = ssh.ssh("cat > /dev/null", input=os.urandom(2 * MiB))
    assert upload.returncode == 0, upload.stderr
    refused = ssh.ssh("true", identity=stranger_key)
    assert refused.returncode == 255
    after = settled(metered, before, accepted=2, refused=1)

    def moved(direction):
        name = "jupyter_sshd_proxy_bytes_total"
        return value(after, name, direction=direction) - value(before, name, direction=direction)

    # The payload, plus SSH's own framing and key exchanges (a few kB each).
    assert MiB < moved("to_client") < MiB * 1.1 + 96 * 1024
    assert 2 * MiB < moved("from_client") < 2 * MiB * 1.1 + 96 * 1024


def test_an_open_session_is_an_open_connection(once, metered, ssh):
    session = ssh.open_session("sleep 600")
    try:
        wait_for(
            lambda: value(scrape(metered), "jupyter_sshd_proxy_connections") == 1,
            10,
            "one open connection",
        )
    finally:
        ssh.end(session)
    wait_for(
        lambda: value(scrape(metered), "jupyter_sshd_proxy_connections") == 0,
        10,
        "no open connection",
    )


def open_websocket(server):
    return connect(
        f"ws://127.0.0.1:{server.port}/sshd/",
        additional_headers={"Authorization": f"token {server.token}"},
        open_timeout=10,
        compression=None,
    )


def test_waiting_to_log_in_and_refused_by_the_limit(once, metered):
    """max_unauthenticated 1: one WebSocket gets an sshd and waits to log in, one
    more waits for its turn, the third is refused (close code 1013, try again)."""
    before = scrape(metered)
    with open_websocket(metered) as first, open_websocket(metered):
        assert first.recv(timeout=10).startswith(b"SSH-2.0-")  # sshd talks to it
        wait_for(
            lambda: value(scrape(metered), "jupyter_sshd_proxy_waiting_connections") == 2,
            10,
            "two connections waiting to log in",
        )
        with open_websocket(metered) as third, pytest.raises(ConnectionClosedError) as closed:
            third.recv(timeout=10)
        assert closed.value.rcvd.code == 1013
        assert "max_unauthenticated" in closed.value.rcvd.reason
        now = scrape(metered)
        name = "jupyter_sshd_proxy_refused_connections_total"
        assert value(now, name, reason="limit") - value(before, name, reason="limit") == 1
    wait_for(
        lambda: value(scrape(metered), "jupyter_sshd_proxy_waiting_connections") == 0,
        15,
        "no connection waiting",
    )


def test_a_supervisor_restart_is_counted(once, metered, ssh):
    before = scrape(metered)
    os.kill(metered.status()["pid"], signal.SIGKILL)
    result = ssh.ssh("true", timeout=20)
    assert result.returncode == 0, result.stderr
    name = "jupyter_sshd_proxy_supervisor_restarts_total"
    wait_for(
        lambda: value(scrape(metered), name) - value(before, name) == 1,
        10,
        "the restart to be counted",
    )


def test_sshd_that_cannot_start_is_counted(once, setup):
    from ..support.helpers import knock

    server = setup.server(JUPYTER_SSHD_PROXY_SSHD_PATH="/nonexistent/sshd").start()
    try:
        knock(server)
        knock(server)
        now = scrape(server)
        assert value(now, "jupyter_sshd_proxy_sshd_start_failures_total") == 2
        name = "jupyter_sshd_proxy_refused_connections_total"
        assert value(now, name, reason="sshd_cannot_start") == 2
    finally:
        server.stop()
