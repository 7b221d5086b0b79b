"""What this Jupyter server knows of its SSH connections: the numbers behind
its metrics (metrics.py), and each connection's record behind its audit
events (audit.py).

Two sides report here, both on the Jupyter server's event loop:

* the route (route.py), for each WebSocket: opened, the connection id the
  supervisor greeted it with, the client's version line, closed (with the
  bytes it carried each way);
* the supervisor, through its reports socket (reports.py): a login with the
  user and key sshd named, the end of a connection, refusals, sshd failing
  to start, how many connections wait to log in, a new supervisor.

A record is joined by the connection id. Its "opened" event goes out when
sshd accepts the login (the route knows the Hub user and the client's
version by then: both come before authentication); its "closed" event when
both sides have seen the end, or CLOSE_WAIT seconds after the first did.

The byte path only adds to two integers of its own handler per chunk; the
totals are summed when /metrics is read.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import reports

if TYPE_CHECKING:
    from jupyter_sshd_proxy_client.keys.grammar import PublicKey

CLOSE_WAIT = 5.0  # seconds one side's end waits for the other's
REMEMBER_CLOSED = 1000  # ids of closed records kept, for reports that come late
ROUTE_REFUSALS = ("no_terminal_right", "ssh_off", "sshd_cannot_start")
REFUSAL_REASONS = (*reports.REFUSAL_REASONS, *ROUTE_REFUSALS)


class Route(Protocol):
    """What the ledger reads of a route handler (route.SSHDRouteHandler)."""

    bytes_to_client: int
    bytes_from_client: int
    client_version: str | None


@dataclass
class Counts:
    """The numbers /metrics shows; see metrics.py for what each means."""

    logins_accepted: int = 0
    logins_refused: int = 0
    waiting: int = 0
    sshd_start_failures: int = 0
    supervisor_restarts: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSAL_REASONS, 0))
    # bytes of connections that have closed; open ones are added when read
    bytes_to_client: int = 0
    bytes_from_client: int = 0


@dataclass
class Record:
    """One SSH connection, as both sides have described it so far."""

    id: str
    route: Route | None = None
    hub_user: str | None = None
    started: float = field(default_factory=time.monotonic)
    login: dict[str, Any] | None = None
    logged_in: bool = False
    route_closed: bool = False
    ended: bool = False  # the supervisor saw its sshd end
    bytes_to_client: int | None = None
    bytes_from_client: int | None = None
    client_version: str | None = None
    duration: float | None = None
    timer: asyncio.TimerHandle | None = None


class Audit(Protocol):
    def connection_opened(self, record: Record) -> None: ...
    def connection_closed(self, record: Record) -> None: ...
    def refused(self, reason: str, hub_user: str | None) -> None: ...
    def key_added(self, hub_user: str | None, key: PublicKey, path: str) -> None: ...
    def key_removed(
        self, hub_user: str | None, fingerprint: str, key: PublicKey | None, paths: list[str]
    ) -> None: ...


class Ledger:
    def __init__(self, log: logging.Logger, audit: Audit | None = None) -> None:
        self.log = log
        self.audit = audit
        # sshd logs logins at LogLevel INFO and more; below, none is ever seen,
        # and the login counters stay at 0 rather than count every one refused.
        self.logins_logged = True
        self.counts = Counts()
        self.routes: set[Route] = set()  # open WebSockets connected to the supervisor
        self.records: dict[str, Record] = {}
        # Closed records whose end the supervisor had not reported yet.
        self.closed_early: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self.supervisor_pid: int | None = None
        self.restarts_seen = 0

    # Read by /metrics.

    def bytes_totals(self) -> tuple[int, int]:
        """Bytes through the route to the client and from it, open connections included."""
        down, up = self.counts.bytes_to_client, self.counts.bytes_from_client
        for route in self.routes:
            down += route.bytes_to_client
            up += route.bytes_from_client
        return down, up

    # From the route.

    def route_opened(self, route: Route) -> None:
        self.routes.add(route)

    def route_identified(self, route: Route, connection_id: str, hub_user: str | None) -> None:
        record = self.records.setdefault(connection_id, Record(connection_id))
        record.route, record.hub_user, record.started = route, hub_user, time.monotonic()

    def route_refused(self, reason: str, hub_user: str | None) -> None:
        """The route refused a connection (the supervisor's refusals are counted
        from its reports, which cover connections that bypass the route too)."""
        if reason in ROUTE_REFUSALS:
            self.counts.refused[reason] += 1
        if self.audit is not None:
            self.audit.refused(reason, hub_user)

    def route_closed(self, route: Route, connection_id: str | None) -> None:
        if route not in self.routes:
            return
        self.routes.discard(route)
        self.counts.bytes_to_client += route.bytes_to_client
        self.counts.bytes_from_client += route.bytes_from_client
        record = self.records.get(connection_id) if connection_id else None
        if record is None:
            return
        record.route_closed = True
        record.bytes_to_client = route.bytes_to_client
        record.bytes_from_client = route.bytes_from_client
        record.client_version = route.client_version
        record.duration = time.monotonic() - record.started
        self._settle(record)

    # From the supervisor.

    def report(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            return
        try:
            handler(message)
        except (KeyError, TypeError, ValueError):
            self.log.warning("jupyter-sshd-proxy: a report of the supervisor was not understood")

    def _on_hello(self, message: dict[str, Any]) -> None:
        restarts = int(message["restarts"])
        if self.supervisor_pid is not None and restarts > self.restarts_seen:
            self.counts.supervisor_restarts += restarts - self.restarts_seen
        self.supervisor_pid = int(message["pid"])
        self.restarts_seen = max(self.restarts_seen, restarts)
        # A new supervisor: the sshd processes of the ones before are gone.
        # (Its own connections may be known already: the route reads their
        # greeting on another socket, maybe before this report.)
        ours = f"{message['run']}-"
        for record in list(self.records.values()):
            if not record.id.startswith(ours):
                self._ended(record)

    def _on_login(self, message: dict[str, Any]) -> None:
        connection_id = str(message["id"])
        if connection_id in self.closed_early:
            return
        record = self.records.setdefault(connection_id, Record(connection_id))
        if record.logged_in:
            return
        login = {
            name: message.get(name)
            for name in (
                "user",
                "key_type",
                "fingerprint",
                "key_file",
                "key_line",
                "certificate_id",
                "certificate_serial",
            )
        }
        if not isinstance(login["user"], str):
            raise ValueError(login["user"])
        record.login, record.logged_in = login, True
        self.counts.logins_accepted += 1
        if self.audit is not None:
            self.audit.connection_opened(record)

    def _on_end(self, message: dict[str, Any]) -> None:
        connection_id = str(message["id"])
        if connection_id in self.closed_early:
            # Its closed event went out without this; count it now.
            if not self.closed_early.pop(connection_id):
                self._count_refused()
            return
        record = self.records.get(connection_id)
        if record is None:
            if not message.get("logged_in"):
                self._count_refused()
                return
            record = self.records.setdefault(connection_id, Record(connection_id))
        self._ended(record)

    def _ended(self, record: Record) -> None:
        if record.ended:
            return
        record.ended = True
        if not record.logged_in:
            self._count_refused()
        if record.route is None and record.duration is None:
            record.duration = time.monotonic() - record.started
        self._settle(record)

    def _count_refused(self) -> None:
        if self.logins_logged:
            self.counts.logins_refused += 1

    def _on_refused(self, message: dict[str, Any]) -> None:
        reason = message["reason"]
        if reason in reports.REFUSAL_REASONS:
            self.counts.refused[reason] += 1

    def _on_start_failure(self, message: dict[str, Any]) -> None:
        self.counts.sshd_start_failures += 1

    def _on_waiting(self, message: dict[str, Any]) -> None:
        self.counts.waiting = max(0, int(message["count"]))

    def preflight_failed(self) -> None:
        """sshd could not be prepared in the Jupyter server (start_command)."""
        self.counts.sshd_start_failures += 1

    # Closing a record.

    def _settle(self, record: Record) -> None:
        """Send the closed event once both sides have seen the end; after
        CLOSE_WAIT seconds with what is known, when one of them never says."""
        done = record.ended and (record.route is None or record.route_closed)
        if done:
            self._close(record)
        elif record.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._close(record)
                return
            record.timer = loop.call_later(CLOSE_WAIT, self._close, record)

    def _close(self, record: Record) -> None:
        if self.records.pop(record.id, None) is None:
            return
        if record.timer is not None:
            record.timer.cancel()
        if not record.ended:
            self.closed_early[record.id] = record.logged_in
            while len(self.closed_early) > REMEMBER_CLOSED:
                self.closed_early.popitem(last=False)
        # A connection that bypassed the route and never logged in is nobody's news.
        if self.audit is not None and (record.route is not None or record.logged_in):
            self.audit.connection_closed(record)


def hub_user(handler: Any) -> str | None:
    """The request's authenticated user, when the server runs under JupyterHub."""
    if not os.environ.get("JUPYTERHUB_USER"):
        return None
    user = handler.current_user
    name = getattr(user, "username", None) or getattr(user, "name", None)
    return name if isinstance(name, str) else None


class ReportsProtocol(asyncio.Protocol):
    """The Jupyter server's end of one supervisor's reports connection."""

    def __init__(self, on_report: Callable[[dict[str, Any]], None]) -> None:
        self.on_report = on_report
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if len(self.buffer) > reports.MAX_REPORT:
            self.buffer = b""  # not ours, or broken: drop it
        for line in lines:
            message = reports.read_report(line)
            if message is not None:
                self.on_report(message)


def serve_reports(
    path: str, on_report: Callable[[dict[str, Any]], None]
) -> asyncio.Task[asyncio.Server]:
    """Listen on path (now, so a supervisor started right after can connect)
    and read every connection's reports on the running event loop."""
    sock = reports.listen(path)
    loop = asyncio.get_running_loop()
    return loop.create_task(loop.create_unix_server(lambda: ReportsProtocol(on_report), sock=sock))
