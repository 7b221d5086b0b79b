"""The long runs: the fault tests' soak versions, with
JUPYTER_SSHD_PROXY_SOAK=1 only (they print the figures they reach with -s)."""

from __future__ import annotations

import os
import signal

from ..support.faults import (
    MiB,
    PeakMemory,
    connections,
    figure,
    move_and_verify,
    new_connection,
    rapid_upgrades,
)


def test_soak_ten_thousand_rapid_upgrades(once, tight, tight_ssh):
    rapid_upgrades(tight, tight_ssh, 10_000)


def test_soak_sshd_killed_again_and_again(once, server, ours):
    """Kill a session's sshd, connect at once, a hundred times over."""
    rounds = 100
    for round_number in range(rounds):
        before = connections(server)
        session = ours.open_session("sleep 600")
        try:
            sshd = new_connection(server, before)
            os.kill(sshd, signal.SIGKILL if round_number % 2 else signal.SIGTERM)
            result = ours.ssh("echo back")
            assert result.returncode == 0, (round_number, result.stderr)
            assert result.stdout == b"back\n"
        finally:
            ours.end(session)
    figure("sshd killed, then ssh at once", f"{rounds} of {rounds} worked")


def test_soak_many_concurrent_transfers_both_ways(once, server, ours, tmp_path):
    with PeakMemory(server.process.pid) as peak:
        moved = move_and_verify(ours, tmp_path, sessions=40, size=256 * MiB)
    figure("bytes moved and verified (40 sessions)", f"{moved / 1024**3:.1f} GiB")
    figure("Jupyter peak RSS growth meanwhile", f"{peak.growth / MiB:.1f} MiB")
