"""Tell the Jupyter server (and through it JupyterHub's idle culler) about SSH use.

The route itself records nothing (update_last_activity is off in the spec):
jupyter-server-proxy would count every WebSocket ping, and a laptop that
keeps a connection open would keep its server alive forever. Instead we look
at sshd's own connections every few seconds:

  traffic      bytes moved through an SSH connection count (typing, copying,
               port forwarding, and ssh's own keepalives if the client sends
               them); WebSocket pings never reach sshd, so they do not.
  connections  an open SSH connection counts, but only for its first
               activity_connection_hours: a forgotten session is culled later.
  off          SSH use is not activity.

Linux only (it reads /proc); elsewhere nothing is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import procfs

if TYPE_CHECKING:
    from .settings import SSHDProxy

POLICIES = ("traffic", "connections", "off")
SOURCE = "jupyter-sshd-proxy"


def connection_bytes(pid: int) -> int | None:
    """Bytes moved so far by the sshd processes of one connection: the process
    the supervisor started for it, and the sshd processes below it (with
    privilege separation, the child "sshd: USER@notty" does the talking; the
    session's own commands are not counted)."""
    total = procfs.io_bytes(pid)
    if total is None:
        return None
    for child in procfs.descendants(pid):
        if (procfs.program(child) or "").startswith("sshd"):
            total += procfs.io_bytes(child) or 0
    return total


class ActivityTracker:
    def __init__(
        self,
        policy: str,
        connection_hours: float,
        connections: Callable[[], list[int]],
        record: Callable[[datetime], None],
    ) -> None:
        """connections() lists sshd's per-connection pids; record(when) reports activity."""
        self.policy = policy
        self.connection_limit = connection_hours * 3600
        self.connections = connections
        self.record = record
        self.counters: dict[int, int | None] = {}
        self.first_seen: dict[int, float] = {}

    def poll(self) -> None:
        if self.policy == "off":
            return
        pids = self.connections()
        now = time.monotonic()
        self.first_seen = {pid: self.first_seen.get(pid, now) for pid in pids}
        if self.policy == "traffic":
            counters = {pid: connection_bytes(pid) for pid in pids}
            # A new connection is activity too: it is not in self.counters yet.
            moved = any(counters[pid] != self.counters.get(pid) for pid in pids)
            self.counters = counters
        else:
            moved = any(now - self.first_seen[pid] < self.connection_limit for pid in pids)
        if moved:
            self.record(datetime.now(timezone.utc))


def start_tracking(serverapp: Any, config: SSHDProxy, connections: Callable[[], list[int]]) -> None:
    """Poll sshd's connections from the Jupyter server's event loop."""
    from tornado.ioloop import PeriodicCallback

    if not procfs.available():
        return

    def record(when: datetime) -> None:
        serverapp.web_app.settings.setdefault("last_activity_times", {})[SOURCE] = when

    tracker = ActivityTracker(
        config.activity, config.activity_connection_hours, connections, record
    )
    PeriodicCallback(tracker.poll, config.activity_poll_seconds * 1000).start()
