"""The ledger's join of the route's and the supervisor's views of a connection,
without processes: the reports are given as the supervisor sends them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from jupyter_sshd_proxy import ledger as ledger_module
from jupyter_sshd_proxy.ledger import Ledger

FINGERPRINT = "SHA256:qRJMwZKO8+8Muy2dKM1bNLJTqvpqnGvQ2qsOmqDtaSc"


class FakeRoute:
    def __init__(self, down=0, up=0, version="SSH-2.0-OpenSSH_9.2"):
        self.bytes_to_client, self.bytes_from_client, self.client_version = down, up, version


class Recorder:
    """Stands in for audit.Audit: what it was asked to send, in order."""

    def __init__(self):
        self.events = []

    def connection_opened(self, record):
        self.events.append(("opened", record.id, record.hub_user, dict(record.login or {})))

    def connection_closed(self, record):
        self.events.append(
            (
                "closed",
                record.id,
                record.logged_in,
                record.bytes_to_client,
                record.bytes_from_client,
            )
        )

    def refused(self, reason, hub_user):
        self.events.append(("refused", reason, hub_user))


def login(connection_id, user="alice"):
    return {
        "type": "login",
        "id": connection_id,
        "user": user,
        "key_type": "ED25519",
        "fingerprint": FINGERPRINT,
        "key_file": None,
        "key_line": None,
    }


def end(connection_id, logged_in):
    return {"type": "end", "id": connection_id, "logged_in": logged_in}


def make() -> tuple[Ledger, Recorder]:
    recorder = Recorder()
    return Ledger(logging.getLogger("test"), recorder), recorder


def run(coroutine_function):
    asyncio.run(coroutine_function())


def test_a_session_through_the_route_opens_and_closes_once():
    async def main():
        ledger, recorder = make()
        route = FakeRoute()
        ledger.route_opened(route)
        ledger.route_identified(route, "r-1", "hubalice")
        ledger.report(login("r-1"))
        route.bytes_to_client, route.bytes_from_client = 1000, 200
        assert ledger.bytes_totals() == (1000, 200)
        ledger.route_closed(route, "r-1")
        ledger.report(end("r-1", True))
        opened, closed = recorder.events
        assert opened[:3] == ("opened", "r-1", "hubalice")
        assert opened[3]["user"] == "alice"
        assert opened[3]["fingerprint"] == FINGERPRINT
        assert closed == ("closed", "r-1", True, 1000, 200)
        assert ledger.counts.logins_accepted == 1
        assert ledger.counts.logins_refused == 0
        assert ledger.bytes_totals() == (1000, 200)
        assert not ledger.routes
        assert not ledger.records

    run(main)


def test_the_end_may_come_before_the_route_closes():
    async def main():
        ledger, recorder = make()
        route = FakeRoute(5, 6)
        ledger.route_opened(route)
        ledger.route_identified(route, "r-1", None)
        ledger.report(end("r-1", False))
        assert recorder.events == []  # waits for the route's bytes
        ledger.route_closed(route, "r-1")
        assert recorder.events == [("closed", "r-1", False, 5, 6)]
        assert ledger.counts.logins_refused == 1

    run(main)


def test_one_side_that_never_says_is_waited_for_a_moment_only(monkeypatch):
    monkeypatch.setattr(ledger_module, "CLOSE_WAIT", 0.05)

    async def main():
        ledger, recorder = make()
        route = FakeRoute(1, 2)
        ledger.route_opened(route)
        ledger.route_identified(route, "r-1", None)
        ledger.report(login("r-1"))
        ledger.route_closed(route, "r-1")
        await asyncio.sleep(0.2)
        assert recorder.events[-1] == ("closed", "r-1", True, 1, 2)
        # The end, late: no second event, nothing counted twice.
        ledger.report(end("r-1", True))
        assert len(recorder.events) == 2
        assert ledger.counts.logins_accepted == 1
        assert ledger.counts.logins_refused == 0

    run(main)


def test_a_late_end_of_a_connection_that_never_logged_in_is_counted(monkeypatch):
    monkeypatch.setattr(ledger_module, "CLOSE_WAIT", 0.05)

    async def main():
        ledger, recorder = make()
        route = FakeRoute()
        ledger.route_opened(route)
        ledger.route_identified(route, "r-1", None)
        ledger.route_closed(route, "r-1")
        await asyncio.sleep(0.2)
        ledger.report(end("r-1", False))
        assert ledger.counts.logins_refused == 1
        assert [e[0] for e in recorder.events] == ["closed"]

    run(main)


def test_connections_that_bypass_the_route():
    async def main():
        ledger, recorder = make()
        ledger.report(login("d-1"))
        ledger.report(end("d-1", True))
        ledger.report(end("d-2", False))  # a scan: counted, no event
        assert [e[:2] for e in recorder.events] == [("opened", "d-1"), ("closed", "d-1")]
        assert recorder.events[1][3] is None  # no bytes through the route
        assert (ledger.counts.logins_accepted, ledger.counts.logins_refused) == (1, 1)

    run(main)


def test_a_new_supervisor_ends_the_connections_of_the_old_one_only():
    async def main():
        ledger, recorder = make()
        ledger.report({"type": "hello", "pid": 10, "run": "aaa", "restarts": 0})
        ledger.report(login("aaa-1"))
        new_route = FakeRoute()
        ledger.route_opened(new_route)
        ledger.route_identified(new_route, "bbb-1", None)  # greeted before the hello came
        ledger.report({"type": "hello", "pid": 11, "run": "bbb", "restarts": 1})
        assert ("closed", "aaa-1", True, None, None) in recorder.events
        assert "bbb-1" in ledger.records
        assert ledger.counts.supervisor_restarts == 1
        ledger.report({"type": "hello", "pid": 12, "run": "ccc", "restarts": 3})
        assert ledger.counts.supervisor_restarts == 3  # one died before it could say

    run(main)


def test_counters_from_the_supervisor():
    ledger, _ = make()
    ledger.report({"type": "refused", "reason": "limit"})
    ledger.report({"type": "refused", "reason": "made-up"})
    ledger.report({"type": "start_failure"})
    ledger.report({"type": "waiting", "count": 4})
    ledger.report({"type": "unknown kind"})
    ledger.preflight_failed()
    assert ledger.counts.refused["limit"] == 1
    assert ledger.counts.sshd_start_failures == 2
    assert ledger.counts.waiting == 4


def test_refusals_by_the_route_are_counted_and_told():
    ledger, recorder = make()
    ledger.route_refused("no_terminal_right", "mallory")
    ledger.route_refused("limit", "bob")  # counted from the supervisor's report
    assert ledger.counts.refused["no_terminal_right"] == 1
    assert ledger.counts.refused["limit"] == 0
    assert recorder.events == [
        ("refused", "no_terminal_right", "mallory"),
        ("refused", "limit", "bob"),
    ]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "login", "id": "x-1", "user": 7},
        {"type": "login"},
        {"type": "waiting", "count": "many"},
        {"type": "hello", "pid": "x"},
    ],
)
def test_a_report_not_understood_is_a_warning(message, caplog):
    ledger, recorder = make()
    with caplog.at_level(logging.WARNING):
        ledger.report(message)
    assert "not understood" in caplog.text
    assert recorder.events == []


def test_below_loglevel_info_logins_are_not_counted():
    async def main():
        ledger, _ = make()
        ledger.logins_logged = False
        ledger.report(end("x-1", False))
        assert ledger.counts.logins_refused == 0

    run(main)
