"""The supervisor's decisions, driven without processes, sockets or clocks.

Each test walks jupyter_sshd_proxy.admission.Admission through a state that
tests/faults/test_faults.py (or test_lifecycle.py) reaches end to end with a real
sshd; the docstring names that test. Time is a number the test passes in.
"""

from __future__ import annotations

import pytest

from jupyter_sshd_proxy.admission import (
    CHECK_DELAYS,
    DEFAULT_MAX_UNAUTHENTICATED,
    Action,
    Admission,
    logged_in,
)

USER = "alice"
LOGGED_IN = "sshd: alice [priv]"
NOT_YET = "sshd: [accepted]"
BROKEN = "sshd: broken on purpose; fix that, no restart needed"


def tight(**options) -> Admission[str]:
    """As test_faults.py's `tight` server: 4 may wait to log in, 3 s to log in."""
    admission: Admission[str] = Admission(
        user=USER, max_unauthenticated=4, login_grace=3.0, **options
    )
    admission.listened("listening again")
    return admission


def default() -> Admission[str]:
    admission: Admission[str] = Admission(user=USER, login_grace=30.0)
    admission.listened("listening again")
    return admission


def arrive(admission: Admission[str], names, now: float) -> dict[str, Action]:
    return {name: admission.arrived(name, now) for name in names}


def log_in(admission: Admission[str], *names: str) -> None:
    for name in names:
        admission.title(name, LOGGED_IN)


def broken(admission: Admission[str], now: float) -> None:
    """A quick failure, and the check it asks for finds sshd broken."""
    assert admission.arrived("first", now) is Action.START
    assert admission.exited("first", now + 0.125, 1, client_gone=False)
    admission.checking(now + 0.125)
    admission.checked(now + 0.25, BROKEN)


# When a connection counts as logged in.


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("sshd: alice [priv]", True),
        ("sshd: alice@notty", True),
        ("sshd: alice@pts/0", True),
        ("sshd-session: alice [priv]", True),  # OpenSSH 9.8 and later
        ("sshd: [accepted]", False),
        ("sshd: [net]", False),
        ("sshd-session: alice [net]", False),
        ("sshd: alicebob [priv]", False),
        ("sshd: bob@notty", False),
        ("sshd: ali [priv]", False),
        ("/usr/sbin/sshd -i -f /x/sshd_config", False),
        ("bash: alice [priv]", False),
        ("", False),
    ],
)
def test_a_title_shows_a_login_only_for_this_user(title, expected):
    assert logged_in(title, USER) is expected


def test_a_connection_waits_to_log_in_until_its_title_says_so_or_5s_past_the_grace_time():
    """The rule behind every bound in test_faults.py: sshd's title, and for a
    title that never says so (a frozen sshd: the SIGSTOP case of
    test_one_sessions_sshd_killed_or_frozen_leaves_the_rest_alone,
    test_a_frozen_sshd_does_not_grow_the_server_with_uploads) 5 s past the
    login grace time at most."""
    admission = tight()
    arrive(admission, ["a", "b", "c"], 0.0)
    assert admission.unconfirmed(0.0) == ["a", "b", "c"]
    admission.title("a", NOT_YET)
    admission.title("b", LOGGED_IN)
    assert admission.unconfirmed(1.0) == ["a", "c"]
    assert admission.waiting_to_log_in(7.99) == 2
    assert admission.waiting_to_log_in(8.0) == 0  # 3 s grace + 5
    assert admission.unconfirmed(8.0) == []  # and their titles are not read any more
    admission.title("unknown", LOGGED_IN)  # an sshd already gone: nothing happens
    assert admission.waiting_to_log_in(0.0) == 2


def test_with_no_login_grace_time_a_connection_waits_until_its_title_says_so():
    admission: Admission[str] = Admission(user=USER, login_grace=0, max_unauthenticated=1)
    admission.listened("")
    assert admission.arrived("a", 0.0) is Action.START
    assert admission.arrived("b", 0.0) is Action.QUEUE
    assert admission.waiting_to_log_in(10**6) == 1
    assert admission.expire(10**6) == []
    log_in(admission, "a")
    assert admission.next_turn(10**6) == "b"


# Admit, queue, refuse.


def test_half_open_connections_4_start_4_wait_the_rest_are_refused_with_one_line():
    """test_connections_waiting_to_log_in_are_bounded: 12 WebSockets that never
    send a byte against a limit of 4."""
    admission = tight()
    actions = arrive(admission, [f"ws{i}" for i in range(12)], 0.0)
    assert [actions[f"ws{i}"] for i in range(12)] == (
        [Action.START] * 4 + [Action.QUEUE] * 4 + [Action.REFUSE] * 4
    )
    assert admission.queued() == ["ws4", "ws5", "ws6", "ws7"]
    assert admission.refused == 4
    [line] = admission.lines()
    assert line == (
        "4 SSH connections are waiting to log in and as many more for their turn; new "
        "ones are closed until they log in or their login grace time of 3s is over "
        "(c.SSHDProxy.max_unauthenticated); 1 refused so far"
    )
    # sshd ends the four at their login grace time (older than a quick failure:
    # no check); the queued ones have waited as long, and are closed too.
    for name in ("ws0", "ws1", "ws2", "ws3"):
        assert not admission.exited(name, 3.0, 255, client_gone=False)
    assert admission.expire(3.0) == ["ws4", "ws5", "ws6", "ws7"]
    assert admission.next_turn(3.0) is None
    assert admission.lines() == []


def test_queued_connections_get_their_turn_as_slots_free_never_more_than_the_limit():
    """test_connections_waiting_to_log_in_are_bounded: `most == 4` sshd at any
    time, and the queued ones served as soon as sshd ends the first ones."""
    admission = tight()
    arrive(admission, [f"ws{i}" for i in range(8)], 0.0)
    assert admission.next_turn(1.0) is None  # all 4 slots taken
    assert not admission.exited("ws0", 2.9, 255, client_gone=False)
    assert admission.expire(2.9) == []
    assert admission.next_turn(2.9) == "ws4"
    assert admission.next_turn(2.9) is None
    assert admission.waiting_to_log_in(2.9) == 4
    log_in(admission, "ws1", "ws2")
    assert [admission.next_turn(2.95), admission.next_turn(2.95)] == ["ws5", "ws6"]
    assert admission.next_turn(2.95) is None
    assert admission.waiting_to_log_in(2.95) == 4
    assert admission.queued() == ["ws7"]
    # A new arrival does not overtake the queue, even with a slot free.
    assert not admission.exited("ws3", 2.96, 255, client_gone=False)
    assert admission.arrived("late", 2.96) is Action.QUEUE
    assert admission.next_turn(2.96) == "ws7"
    assert admission.queued() == ["late"]


def test_400_idle_websockets_get_32_sshd_32_wait_and_336_are_refused():
    """test_idle_websockets_hold_bounded_resources, with the default limit."""
    admission = default()
    actions = list(arrive(admission, [f"ws{i}" for i in range(400)], 0.0).values())
    assert DEFAULT_MAX_UNAUTHENTICATED == 32
    assert actions.count(Action.START) == 32
    assert actions.count(Action.QUEUE) == 32
    assert actions.count(Action.REFUSE) == 336
    assert len(admission.lines()) == 1
    # A minute later, the refusals so far are counted in the next line.
    assert admission.arrived("later", 59.9) is Action.REFUSE
    assert admission.lines() == []
    assert admission.arrived("later still", 60.0) is Action.REFUSE
    [line] = admission.lines()
    assert line.endswith("; 338 refused so far")


def test_a_burst_of_real_logins_all_get_in_in_turn():
    """test_twenty_concurrent_transfers_both_ways and its soak (40 scp, sftp
    and rsync at once): more logins than the limit wait, none is refused."""
    admission = default()
    names = [f"rsync{i}" for i in range(40)]
    actions = arrive(admission, names, 0.0)
    assert list(actions.values()).count(Action.START) == 32
    assert admission.queued() == names[32:]
    started = names[:32]
    now = 0.0
    while admission.queued():
        now += 0.05
        log_in(admission, *started[-4:])  # a few log in between two looks
        assert admission.expire(now) == []
        while (turn := admission.next_turn(now)) is not None:
            started.append(turn)
        assert admission.waiting_to_log_in(now) <= 32
    assert started == names
    assert admission.refused == 0
    assert admission.lines() == []


def test_hung_up_connections_are_closed_quietly():
    """test_a_thousand_rapid_upgrades (each WebSocket hung up at once), and
    jupyter-server-proxy's readiness probe: no sshd, no line, not refused."""
    admission = tight()
    for i in range(1000):
        assert admission.arrived(f"probe{i}", i / 1000, hung_up=True) is Action.CLOSE
    assert admission.refused == 0
    assert admission.waiting_to_log_in(1.0) == 0
    assert admission.lines() == []
    assert admission.arrived("real", 1.0) is Action.START


def test_queued_connections_whose_client_hung_up_are_closed():
    """test_connections_waiting_to_log_in_are_bounded and the rapid upgrades:
    a queued WebSocket closed by its client holds no place in the queue."""
    admission = tight()
    arrive(admission, [f"ws{i}" for i in range(8)], 0.0)
    assert admission.expire(1.0, hung_up=["ws5", "ws7"]) == ["ws5", "ws7"]
    assert admission.queued() == ["ws4", "ws6"]
    assert admission.arrived("ws8", 1.0) is Action.QUEUE


# sshd ends.


@pytest.mark.parametrize("code", [-9, -15, 255, 1])
def test_a_logged_in_sessions_sshd_ending_asks_for_no_check(code):
    """test_one_sessions_sshd_killed_or_frozen_leaves_the_rest_alone (SIGKILL,
    SIGTERM), test_soak_sshd_killed_again_and_again,
    test_rsync_interrupted_mid_file_resumes_to_an_equal_file: the next
    connection gets its sshd at once."""
    admission = tight()
    arrive(admission, ["echo", "victim"], 0.0)
    log_in(admission, "echo", "victim")
    assert not admission.exited("victim", 0.5, code, client_gone=False)
    assert not admission.check_due(0.5)
    assert admission.arrived("new", 0.5) is Action.START
    assert admission.lines() == []
    assert admission.status() == {"serving": True, "last_error": None}


def test_a_frozen_logged_in_session_holds_no_slot():
    """test_one_sessions_sshd_killed_or_frozen_leaves_the_rest_alone (SIGSTOP):
    a stopped sshd that had logged in does not keep others out."""
    admission: Admission[str] = Admission(user=USER, login_grace=3.0, max_unauthenticated=1)
    admission.listened("")
    assert admission.arrived("frozen", 0.0) is Action.START
    log_in(admission, "frozen")
    assert admission.arrived("new", 0.1) is Action.START


def test_an_early_end_whose_client_hung_up_asks_for_no_check():
    """test_websocket_dropped_without_a_close_frame, test_client_killed_mid_transfer,
    test_a_client_that_vanished_is_ended_by_keepalives: the client explains
    the end."""
    admission = tight()
    arrive(admission, ["ws"], 0.0)
    assert not admission.exited("ws", 0.2, 255, client_gone=True)
    assert not admission.check_due(5.0)


def test_an_sshd_that_ends_well_or_late_asks_for_no_check():
    admission = tight()
    arrive(admission, ["ok", "late"], 0.0)
    assert not admission.exited("ok", 0.1, 0, client_gone=False)
    assert not admission.exited("late", 1.0, 255, client_gone=False)  # QUICK_FAILURE is 1 s
    assert not admission.exited("never started", 1.0, 255, client_gone=False)
    assert not admission.check_due(5.0)


def test_bad_input_ends_sshd_early_and_a_passing_check_says_nothing():
    """test_bad_input_closes_that_connection_only: sshd ends within a second
    while the client is still there, so sshd -T is asked; it says all is well,
    and nothing is logged or changed."""
    admission = tight()
    arrive(admission, ["junk"], 10.0)
    assert admission.exited("junk", 10.3, 255, client_gone=False)
    admission.checking(10.3)
    admission.checked(10.35, None)
    assert admission.lines() == []
    assert admission.status() == {"serving": True, "last_error": None}
    assert admission.arrived("next", 10.4) is Action.START


def test_checks_are_one_a_second_and_one_asked_for_sooner_is_put_off_not_dropped():
    """test_a_thousand_rapid_upgrades (half send a line that is not SSH), and
    the commit that made test_a_broken_sshd_fails_fast_backs_off_and_says_why_once
    pin that no sshd starts once the breakage is known: sshd that broke right
    after a check must still be found out."""
    admission = tight()
    arrive(admission, ["a"], 0.0)
    assert admission.exited("a", 0.1, 255, client_gone=False)
    admission.checking(0.1)
    admission.checked(0.15, None)
    # sshd breaks now; the next quick failures come within the second.
    for i, now in enumerate((0.2, 0.5, 0.9)):
        arrive(admission, [f"b{i}"], now - 0.05)
        assert not admission.exited(f"b{i}", now, 1, client_gone=False)
    assert not admission.check_due(1.09)
    assert admission.timeout(0.9) == pytest.approx(0.2)  # wakes for it at 1.1
    assert admission.check_due(1.1)
    admission.checking(1.1)
    assert not admission.check_due(1.1)  # one check for the three
    admission.checked(1.15, BROKEN)
    assert admission.lines() == [f"sshd cannot start: {BROKEN}; closing SSH connections at "
                                 "once until it can"]  # fmt: skip
    assert admission.arrived("c", 1.2) is Action.REFUSE


# An sshd that cannot start.


def test_a_broken_sshd_refuses_connections_at_once_and_says_why_once():
    """test_a_broken_sshd_fails_fast_backs_off_and_says_why_once: one line that
    says why, every connection closed at once without an sshd (so sshd's own
    complaint stops), status says why, and mending needs no restart."""
    admission = tight()
    broken(admission, 0.0)
    assert admission.lines() == [
        "sshd cannot start: sshd: broken on purpose; fix that, no restart needed; "
        "closing SSH connections at once until it can"
    ]
    assert admission.status() == {
        "serving": False,
        "last_error": f"sshd cannot start: {BROKEN}",
    }
    for i in range(8):
        assert admission.arrived(f"ssh{i}", 0.3 + i / 100) is Action.REFUSE
    assert admission.waiting_to_log_in(0.4) == 0  # no sshd started
    assert admission.lines() == []  # the refusals are counted, not logged
    # Mended: the next retry finds out.
    assert not admission.check_due(0.74)
    assert admission.check_due(0.75)  # 0.5 s after the failed check
    admission.checking(0.75)
    admission.checked(0.8, None)
    assert admission.lines() == ["sshd starts again; serving SSH connections"]
    assert admission.status() == {"serving": True, "last_error": None}
    assert admission.arrived("again", 0.85) is Action.START
    assert not admission.check_due(100.0)


def test_a_broken_sshd_is_retried_with_a_back_off_and_logged_once_a_minute():
    """test_a_broken_sshd_fails_fast_backs_off_and_says_why_once: `sshd -T`
    again after 0.5, 1, 2, 4, 8, 15, 30, then every 60 s; the same reason is
    logged once a minute at most, a new reason at once."""
    assert CHECK_DELAYS == (0.5, 1, 2, 4, 8, 15, 30, 60)
    admission = tight()
    broken(admission, 0.0)
    admission.lines()
    now, logged = 0.25, []
    for delay in (*CHECK_DELAYS, 60, 60):
        assert not admission.check_due(now + delay - 0.01)
        assert admission.timeout(now) == pytest.approx(min(delay, 1.0))
        now += delay
        assert admission.check_due(now)
        admission.checking(now)
        admission.checked(now, BROKEN)
        logged += [(now, line) for line in admission.lines()]
    # Failed and logged at 0.25; the retries at 0.75, 1.75, 3.75, 7.75, 15.75
    # and 30.75 say nothing; from 60.75 on, each retry is a minute after the
    # last line.
    assert [at for at, _ in logged] == [60.75, 120.75, 180.75, 240.75]
    admission.checking(now)
    admission.checked(now + 1, "sshd: another reason")
    [line] = admission.lines()
    assert line.startswith("sshd cannot start: sshd: another reason;")


def test_queued_connections_are_closed_when_sshd_cannot_start():
    """test_a_broken_sshd_fails_fast_backs_off_and_says_why_once with a queue:
    none of them waits for an sshd that cannot start."""
    admission = tight()
    arrive(admission, [f"ws{i}" for i in range(6)], 0.0)
    assert admission.exited("ws0", 0.2, 1, client_gone=False)
    admission.checking(0.2)
    admission.checked(0.3, BROKEN)
    assert admission.expire(0.3) == ["ws4", "ws5"]


def test_an_sshd_that_cannot_be_run_refuses_connections_until_a_check_passes():
    """The supervisor's Popen fails (sshd's program gone: test_lifecycle.py's
    test_sshd_missing_fails_fast_with_one_log_line catches the missing program
    before; this is the same breakage while the server runs)."""
    admission = tight()
    assert admission.arrived("a", 0.0) is Action.START
    admission.start_failed("a", 0.0, "cannot run /gone/sshd: No such file or directory")
    assert admission.waiting_to_log_in(0.0) == 0
    assert admission.lines() == [
        "sshd cannot start: cannot run /gone/sshd: No such file or directory; "
        "closing SSH connections at once until it can"
    ]
    assert admission.arrived("b", 0.1) is Action.REFUSE
    assert admission.check_due(0.5)
    admission.checking(0.5)
    admission.checked(0.6, None)
    assert admission.lines() == ["sshd starts again; serving SSH connections"]
    assert admission.arrived("c", 0.7) is Action.START


# The port.


def test_a_taken_port_is_retried_on_the_back_off_with_one_line():
    """test_a_taken_port_is_retried_with_one_line: tries at 0, 0.5, 1.5 and
    3.5 s, one line, status says why; serving once the port is free."""
    admission: Admission[str] = Admission(user=USER, login_grace=30.0)
    problem = "cannot listen on 127.0.0.1:2222: Address already in use; another program"
    tries = []
    now = 0.0
    while now < 4.0:
        if admission.listen_due(now):
            tries.append(now)
            admission.listen_failed(now, problem)
        now = round(now + 0.05, 2)
    assert tries == [0.0, 0.5, 1.5, 3.5]
    assert admission.lines() == [f"{problem}; trying again"]
    assert admission.status() == {"serving": False, "last_error": problem}
    assert not admission.accepting(4.0)
    assert admission.timeout(4.0) == pytest.approx(1.0)  # next try at 7.5, a second at most
    assert admission.timeout(7.3) == pytest.approx(0.2)
    admission.listened("listening on 127.0.0.1:2222 again")
    assert admission.lines() == ["listening on 127.0.0.1:2222 again"]
    assert admission.status() == {"serving": True, "last_error": None}
    assert not admission.listen_due(100.0)
    assert admission.accepting(7.5)


def test_listening_at_the_first_try_says_nothing():
    admission: Admission[str] = Admission(user=USER, login_grace=30.0)
    assert admission.listen_due(0.0)
    admission.listened("listening again")
    assert admission.lines() == []
    assert admission.status() == {"serving": True, "last_error": None}


def test_out_of_descriptors_pauses_accepting_and_says_so_once_a_minute():
    admission = tight()
    admission.accept_failed(0.0, "Too many open files")
    assert admission.lines() == ["cannot accept connections: Too many open files; 0 refused so far"]
    assert not admission.accepting(0.49)
    assert admission.timeout(0.1) == pytest.approx(0.4)
    assert admission.accepting(0.5)
    admission.accept_failed(30.0, "Too many open files")
    assert admission.lines() == []
    assert not admission.accepting(30.2)


# The loop and stopping.


def test_the_loop_sleeps_a_second_at_most_and_a_moment_while_connections_queue():
    admission = tight()
    assert admission.timeout(0.0) == pytest.approx(1.0)
    arrive(admission, [f"ws{i}" for i in range(5)], 0.0)
    assert admission.timeout(0.0) == pytest.approx(0.05)  # a login wakes nothing


def test_stopping_closes_the_queue_and_status_says_nothing_is_served():
    """test_restarting_the_jupyter_server_with_sessions_open,
    test_the_jupyter_server_killed_takes_every_session_with_it: the status
    file left behind says not serving, with no error."""
    admission = tight()
    arrive(admission, [f"ws{i}" for i in range(6)], 0.0)
    admission.checking(1.0)
    admission.checked(1.1, BROKEN)
    assert admission.stop() == ["ws4", "ws5"]
    assert admission.queued() == []
    assert admission.status() == {"serving": False, "last_error": None}
    assert not admission.accepting(2.0)
