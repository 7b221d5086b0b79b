"""The idle-culling policies, against real processes' I/O counters (no sshd, no Jupyter)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from jupyter_sshd_proxy.activity import ActivityTracker


@pytest.fixture
def connection():
    """A stand-in for one of sshd's per-connection processes: it reads what we write."""
    reader = "import sys\nprint('ready', flush=True)\nfor line in sys.stdin: pass"
    process = subprocess.Popen(
        [sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout.readline() == b"ready\n"  # done starting: its counters rest
    yield process
    process.stdin.close()
    process.wait(10)
    process.stdout.close()


def tracker(policy: str, pids: list[int], hours: float = 8.0):
    records = []
    return ActivityTracker(policy, hours, lambda: list(pids), records.append), records


def traffic(process: subprocess.Popen) -> None:
    process.stdin.write(b"x" * 4096 + b"\n")
    process.stdin.flush()
    time.sleep(0.2)  # let the reader take it in, moving its rchar


def test_traffic_counts_bytes_moved_and_nothing_else(connection):
    pids = [connection.pid]
    activity, records = tracker("traffic", pids)
    activity.poll()
    assert len(records) == 1  # a new connection is activity
    activity.poll()
    assert len(records) == 1  # an idle one is not
    traffic(connection)
    activity.poll()
    assert len(records) == 2
    pids.clear()
    activity.poll()
    assert len(records) == 2  # no connections, no activity


def test_connections_count_while_young_only(connection):
    activity, records = tracker("connections", [connection.pid], hours=0.5 / 3600)
    activity.poll()
    activity.poll()
    assert len(records) == 2  # open and young: activity though idle
    time.sleep(0.6)
    activity.poll()
    traffic(connection)
    activity.poll()
    assert len(records) == 2  # older than the limit: never again


def test_off_records_nothing(connection):
    activity, records = tracker("off", [connection.pid])
    traffic(connection)
    activity.poll()
    assert records == []
