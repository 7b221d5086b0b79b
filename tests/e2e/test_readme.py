"""The README's commands run, and so do the ones the docs name that need the
real things (the demo, the benchmark, `jupyter-sshd-proxy settings`).
tests/unit/test_docs.py checks the rest of what the docs say against the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ..support.helpers import REPO, VENV_BIN, processes_mentioning


def _demo_dirs() -> set[Path]:
    base = Path.home() / ".cache" / "jupyter-sshd-proxy"
    return set(base.glob("demo-*")) if base.exists() else set()


def test_run_demo_opens_a_shell_through_the_proxy_and_cleans_up():
    before = _demo_dirs()
    result = subprocess.run(
        ["./run", "demo"],
        cwd=REPO,
        input=b"echo demo-ok $((40 + 2))\nexit 4\n",
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 4, result.stderr.decode()
    assert result.stdout == b"demo-ok 42\n"
    assert b"jupyter-sshd-proxy demo: Jupyter server with the sshd proxy at" in result.stderr
    assert _demo_dirs() == before
    assert not processes_mentioning("jupyter-sshd-proxy/demo-")


def test_run_demo_runs_one_command():
    result = subprocess.run(
        ["./run", "demo", "--", "echo one command; exit 3"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 3, result.stderr.decode()
    assert result.stdout == b"one command\n"


def test_run_unit_runs_the_unit_tier_with_pytest_arguments():
    """`./run unit` (the README's third command), narrowed by pytest's -k so
    that it costs seconds here: the whole tier runs in the suite anyway."""
    result = subprocess.run(
        ["./run", "unit", "-q", "-p", "no:cacheprovider", "-k", "test_frames"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    # The frame reader's tests passed, and -k left the rest of the tier out.
    assert re.fullmatch(r"\d+ passed, \d+ deselected in [\d.]+s", summary), summary


def test_the_benchmark_runs():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py",
         "--rounds", "1", "--megabytes", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for other in ("sshd -D", "websocat"):
        assert f"ours vs {other}: banner " in result.stdout
        assert ", first " in result.stdout
        assert ", repeated " in result.stdout


def test_the_startup_benchmark_runs():
    result = subprocess.run(
        [sys.executable, "benchmarks/startup.py", "--runs", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    server, hub = result.stdout.splitlines()
    assert "  server  median " in server
    assert "  hub     median " in hub
    # The refused connection is met before websockets (and its ssl) is imported,
    # and nothing of the Hub's API is loaded for a block's start-up.
    assert server.endswith("heavy: none")
    assert hub.endswith("heavy: none")


def test_the_settings_command_prints_every_setting_with_its_default():
    result = subprocess.run(
        [str(VENV_BIN / "jupyter-sshd-proxy"), "settings"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    from jupyter_sshd_proxy.settings import SSHDProxy

    for name in SSHDProxy.class_traits(config=True):
        assert f"--SSHDProxy.{name}=" in result.stdout
    assert "Default: 10.0" in result.stdout
