"""Prometheus metrics on the Jupyter server's own /metrics.

jupyter_server serves prometheus_client's default registry at
<base_url>metrics (authenticated unless c.ServerApp.authenticate_prometheus
is False); the server extension registers one collector there, which reads
this server's ledger (ledger.py) when the endpoint is scraped. Each Jupyter
server is its own process, so each counts only its own connections.

Nothing is counted through prometheus_client on the byte path: the route
adds each chunk's length to an integer of its own, and the collector sums
them when it is read.

METRICS is the reference: name, type, help and labels of each, which the
docs (docs/monitoring.md) and their test follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from .ledger import REFUSAL_REASONS, Ledger

PREFIX = "jupyter_sshd_proxy_"


class Metric(NamedTuple):
    name: str  # counters without their _total, which the exposition adds
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()


METRICS = (
    Metric(
        PREFIX + "connections",
        "gauge",
        "SSH connections open through the /sshd/ route now",
    ),
    Metric(
        PREFIX + "logins",
        "counter",
        "Connections that logged in (result=accepted) or ended without logging in "
        "(result=refused: no key accepted, the client gave up, or the login grace time ran out)",
        ("result",),
    ),
    Metric(
        PREFIX + "waiting_connections",
        "gauge",
        "Connections waiting to log in now, as the c.SSHDProxy.max_unauthenticated limit "
        "counts them: with an sshd not yet told who logs in, or queued for their turn",
    ),
    Metric(
        PREFIX + "refused_connections",
        "counter",
        "Connections refused, by reason: limit (max_unauthenticated reached), sshd_failing "
        "(sshd cannot start now), sshd_cannot_start (sshd could not be prepared), "
        "no_terminal_right (the user may not open a terminal), ssh_off (SSH is off)",
        ("reason",),
    ),
    Metric(
        PREFIX + "bytes",
        "counter",
        "Bytes through the /sshd/ route, to the client (direction=to_client) "
        "and from it (direction=from_client)",
        ("direction",),
    ),
    Metric(
        PREFIX + "sshd_start_failures",
        "counter",
        "Times sshd could not be started: a failed preparation (sshd missing, its "
        "configuration refused) or a failed start found by the supervisor",
    ),
    Metric(
        PREFIX + "supervisor_restarts",
        "counter",
        "Times the supervisor that holds sshd's socket was started again after it died",
    ),
)


def exposed_names() -> list[str]:
    """Every sample name a scrape shows (counters with _total)."""
    return [m.name + ("_total" if m.kind == "counter" else "") for m in METRICS]


class SSHDCollector:
    """Reads the ledger of this process's Jupyter server when /metrics is scraped."""

    def __init__(self) -> None:
        self.ledger: Ledger | None = None

    def describe(self) -> Iterator[Any]:
        return iter(())  # no scrape when registering; collect() has the names

    def collect(self) -> Iterator[Any]:
        ledger = self.ledger
        if ledger is None:
            return
        counts = ledger.counts
        down, up = ledger.bytes_totals()
        values: dict[str, Any] = {
            "connections": len(ledger.routes),
            "logins": {"accepted": counts.logins_accepted, "refused": counts.logins_refused},
            "waiting_connections": counts.waiting,
            "refused_connections": {reason: counts.refused[reason] for reason in REFUSAL_REASONS},
            "bytes": {"to_client": down, "from_client": up},
            "sshd_start_failures": counts.sshd_start_failures,
            "supervisor_restarts": counts.supervisor_restarts,
        }
        for metric in METRICS:
            family_type = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            family = family_type(metric.name, metric.help, labels=metric.labels)
            value = values[metric.name[len(PREFIX) :]]
            if metric.labels:
                for label, number in value.items():
                    family.add_metric([label], number)
            else:
                family.add_metric([], value)
            yield family


COLLECTOR = SSHDCollector()
_registered = False


def register(ledger: Ledger) -> None:
    """Show this ledger's numbers on /metrics (one collector per process: a
    second Jupyter server in the same process takes its place)."""
    global _registered
    COLLECTOR.ledger = ledger
    if not _registered:
        REGISTRY.register(COLLECTOR)
        _registered = True


def metrics_table_markdown() -> str:
    """The metrics table of docs/monitoring.md, made from METRICS."""
    rows = ["| metric | type | labels | what it counts |", "| --- | --- | --- | --- |"]
    for metric, name in zip(METRICS, exposed_names()):
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "none"
        rows.append(f"| `{name}` | {metric.kind} | {labels} | {metric.help} |")
    return "\n".join(rows) + "\n"
