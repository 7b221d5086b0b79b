from __future__ import annotations

import gc
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs

from .support.helpers import (
    PROXIES,
    Account,
    SSHClient,
    make_key,
    process_alive,
    processes_left,
)
from .support.servers import ServerSetup, started_pids

# Fixtures the fault and soak tiers share (servers with tight limits, ...).
pytest_plugins = ["tests.support.faults"]

# Under the home directory (from the password database, as sshd sees it): sshd's
# StrictModes refuses keys below a group- or world-writable directory, and a
# checkout may well live under one (/tmp). KEEP_TEST_WORK=1 keeps it.
RUN_DIR = (
    Path(pwd.getpwuid(os.getuid()).pw_dir)
    / ".cache"
    / "jupyter-sshd-proxy-tests"
    / f"run-{os.getpid()}"
)


# A suite started in the background by a non-interactive shell (`cmd &`,
# nohup) inherits SIGINT ignored, and so would every process it starts:
# JupyterHub stops its services and users' servers with SIGINT first, and
# waits 10 s before SIGTERM when they ignore it. Run as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

STALLS_SEEN: list[str] = []  # reported by the tests, in this process or a worker's


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_each_module():
    """A pipe or file a module's tests leave open warns when the garbage
    collector frees it, which may be in a later module's test (CI once failed
    in test_docs so). Collecting at the end of each module names the module."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _report_websocat_stalls(request):
    """Each websocat stall a test retried, in its report: with -n the reports
    reach the main process, which lists them at the end."""
    from .support.helpers import WEBSOCAT_STALLS

    before = len(WEBSOCAT_STALLS)
    yield
    for stall in WEBSOCAT_STALLS[before:]:
        request.node.user_properties.append(("websocat_stall", stall))


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        STALLS_SEEN.extend(v for k, v in report.user_properties if k == "websocat_stall")


def pytest_terminal_summary(terminalreporter):
    if STALLS_SEEN:
        terminalreporter.write_line(
            f"websocat stalled {len(STALLS_SEEN)} time(s) and the transfer was retried: "
            + "; ".join(STALLS_SEEN)
        )


# Each ProxyCommand is paired with one account instead of running every test
# for every pair: websocat with the server as this user, ours with the server
# as an unprivileged account (as on a Hub). Without root there is only this
# user, and both proxies run with it.
PROXY_OF_ACCOUNT = {"self": "websocat", "unprivileged": "jupyter-sshd-proxy"}


def _unpaired(item) -> bool:
    params = getattr(item, "callspec", None) and item.callspec.params
    if not params or "ssh" not in params:
        return False
    # A module may run websocat for only some of its tests (test_hub.py does).
    websocat_for = getattr(item.module, "WEBSOCAT_ONLY_FOR", None)
    if websocat_for is not None and params["ssh"] == "websocat":
        return item.originalname not in websocat_for
    if "account" not in params or os.getuid() != 0:
        return False
    return PROXY_OF_ACCOUNT[params["account"]] != params["ssh"]


# The tiers, one folder each; every test gets its folder's marker, so that
# `-m unit` or `-m "not hub and not browser"` picks tiers (see CONTRIBUTING.md).
TIERS = ("unit", "e2e", "hub", "browser", "faults", "soak")
TESTS = Path(__file__).resolve().parent


def tier_of(item) -> str:
    folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
    if folder not in TIERS:
        raise pytest.UsageError(
            f"{item.nodeid}: a test module belongs in one of the tier folders "
            f"tests/{{{','.join(TIERS)}}}/ (see CONTRIBUTING.md)"
        )
    return folder


# After pytest has grouped the tests by the session's account: the Hub's
# modules (the longest, and on no account of that grouping) go first, so that
# with -n 2 --dist loadfile no worker starts one of them when the other is
# nearly done.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: tier_of(item) != "hub")  # stable: nothing else moves
    for item in items:
        item.add_marker(tier_of(item))
    unpaired = [item for item in items if _unpaired(item)]
    if unpaired:
        config.hook.pytest_deselected(items=unpaired)
        items[:] = [item for item in items if not _unpaired(item)]
    if os.environ.get("JUPYTER_SSHD_PROXY_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: set JUPYTER_SSHD_PROXY_SOAK=1 to run it")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def run_dir():
    RUN_DIR.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    RUN_DIR.mkdir(mode=0o700)
    yield RUN_DIR
    leftovers = [pid for pid in started_pids() if process_alive(pid)]
    leftovers += processes_left(str(RUN_DIR))
    if os.environ.get("KEEP_TEST_WORK") != "1":
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


ACCOUNT_KINDS = ["self", "unprivileged"]


@pytest.fixture(scope="session", params=ACCOUNT_KINDS)
def account(request, run_dir):
    """The Jupyter server's user: ours, and (as root) a fresh system account."""
    if request.param == "self":
        yield Account.current()
        return
    if os.getuid() != 0:
        pytest.skip("running the server as another account needs root")
    account = Account.create(f"jsp-test-{os.getpid()}")
    try:
        reachable = subprocess.run(
            [sys.executable, "-c", "import jupyter_sshd_proxy, jupyter_server"],
            user=account.uid, group=account.gid, extra_groups=[], cwd="/",
            capture_output=True, check=False,
        )  # fmt: skip
        if reachable.returncode != 0:
            pytest.skip(
                f"{account.name} cannot run {sys.executable} with this package (is the "
                f"checkout or its Python under a private directory?): {reachable.stderr[-300:]!r}"
            )
        yield account
    finally:
        leftovers = processes_left(str(account.home))
        account.remove()
        assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def attacker():
    """Another account on the host (as root only), removed afterwards."""
    if os.getuid() != 0:
        pytest.skip("another account needs root")
    name = f"jsp-attacker-{os.getpid()}"
    account = Account.create(name)
    try:
        yield account
    finally:
        leftovers = [pid for pid in procfs.pids() if procfs.owner(pid) == account.uid]
        account.remove()
        assert not leftovers, f"processes of {name} left behind: {leftovers}"


@pytest.fixture(scope="session")
def client_key(run_dir):
    directory = run_dir / "client"
    directory.mkdir(mode=0o700)
    return make_key(directory / "id_ed25519")


@pytest.fixture(scope="session")
def stranger_key(run_dir):
    directory = run_dir / "stranger"
    directory.mkdir(mode=0o700)
    return make_key(directory / "id_ed25519")


@pytest.fixture(scope="session")
def setup(account, run_dir, client_key):
    return ServerSetup(account, run_dir, client_key)


@pytest.fixture(scope="module")
def server(setup):
    """A running Jupyter server whose sshd has started, with its host keys pinned."""
    with setup.running() as server:
        yield server


@pytest.fixture(scope="module", params=PROXIES)
def ssh(request, server, setup, client_key):
    """ssh through websocat, and through our own ProxyCommand."""
    return SSHClient(server, client_key, setup.known_hosts, proxy=request.param)
