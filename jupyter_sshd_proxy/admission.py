"""The supervisor's decisions, without I/O: who gets an sshd, who waits, who is closed.

The supervisor (supervisor.py) holds the port and runs `sshd -i` for each
connection. Everything it decides is made here, by a plain object that is
told what happened and answers what to do. The object reads no clock, socket,
process or file: the time comes with every event, so that tests drive it
through every state in milliseconds (websockets keeps its protocol Sans-I/O
for the same reason).

    what happened (the supervisor tells it)     what to do (it answers)
    ------------------------------------------  ---------------------------------------
    arrived(conn, now, hung_up)                 START its sshd, QUEUE it, CLOSE it
                                                quietly, or REFUSE it (close, counted)
    title(conn, text): sshd's process title     unconfirmed(now): whose title to read
    start_failed(conn, now, problem)            from then on, REFUSE every connection
    exited(conn, now, code, client_gone)        True: run `sshd -T` now
    checking(now), checked(now, problem)        check_due(now): run `sshd -T` now
    (time passes)                               expire(now, hung_up), next_turn(now):
                                                which queued ones to close or to start
    accept_failed(now, reason)                  accepting(now): whether to accept()
    listen_failed(now, problem), listening()    listen_due(now): try to listen again
    stop()                                      the queued ones to close
                                                timeout(now): how long to sleep at most
                                                lines(): what to log now
                                                status(): what status.json says

The rules:

* At most max_unauthenticated connections are waiting to log in at once
  (sshd's MaxStartups does not apply to sshd -i). As many more wait in a queue
  for their turn without an sshd, for at most the login grace time; more are
  refused. A connection waits to log in until its sshd's process title shows
  the user (logged_in()), and never longer than 5 s past the login grace time
  (sshd ends it at the grace time, so one older than that logged in in a way
  its title does not say).
* An sshd that fails within a second (QUICK_FAILURE) of its start, before
  logging in, while its client is still there, may mean that sshd cannot start
  at all: `sshd -T` is asked, at most once a second; a check asked for within
  that second is put off to its end, never dropped. While sshd cannot start,
  every connection is refused, and the check is tried again after
  CHECK_DELAYS (0.5 s, then doubling up to a minute).
* A port that cannot be listened on is retried on the same schedule.
* A problem is logged when it first happens, when its text changes, and once
  a minute (LOG_EVERY) while it lasts; its end is logged once. Refusals for
  the limit are logged at most once a minute, with their count.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

CHECK_DELAYS = (0.5, 1, 2, 4, 8, 15, 30, 60)  # seconds between tries while something fails
LOG_EVERY = 60.0  # at most one line a minute about a problem that persists
QUICK_FAILURE = 1.0  # an sshd that fails this soon may not be able to start at all
CHECK_AT_MOST_EVERY = 1.0  # seconds between checks while sshd works
PAST_GRACE = 5.0  # a connection this much older than the login grace time has logged in
ACCEPT_PAUSE = 0.5  # seconds without accept() after it ran out of descriptors or memory
QUEUE_POLL = 0.05  # seconds between looks at a queue (nothing wakes the loop for a login)
IDLE_POLL = 1.0  # the longest the loop sleeps
DEFAULT_MAX_UNAUTHENTICATED = 32  # as c.SSHDProxy.max_unauthenticated

Conn = TypeVar("Conn", bound=Hashable)


def logged_in(title: str, user: str) -> bool:
    """Whether sshd's process title shows that its connection has logged in.

    Before that it is "sshd: [accepted]" (the unprivileged "[net]" child does
    the talking); after, the process that sshd -i started is the privileged
    monitor "sshd: USER [priv]", or, when root logs in, the session itself,
    "sshd: root@notty". OpenSSH 9.8 and later say "sshd-session:".
    """
    program, _, rest = title.partition(": ")
    return program.startswith("sshd") and rest.startswith((f"{user} [priv]", f"{user}@"))


class Action(enum.Enum):
    """What to do with a connection that arrived."""

    START = "start sshd for it now"
    QUEUE = "keep it open; next_turn() says when its sshd starts"
    CLOSE = "close it now, quietly: nobody is there"
    REFUSE = "close it now: refused"


class Problem:
    """Something that keeps failing: retried with a back-off, logged at most once a minute."""

    def __init__(self, what_now: str) -> None:
        self.what_now = what_now  # said after the problem: what is done meanwhile
        self._reset()

    def _reset(self) -> None:
        self.text: str | None = None
        self.tries = 0
        self.retry_at = 0.0
        self.logged_text: str | None = None
        self.logged_at = 0.0

    def failed(self, now: float, text: str) -> str | None:
        """It failed (again) at now, for the reason text; the line to log, if any."""
        delay = CHECK_DELAYS[min(self.tries, len(CHECK_DELAYS) - 1)]
        self.tries += 1
        self.text, self.retry_at = text, now + delay
        if text != self.logged_text or now - self.logged_at >= LOG_EVERY:
            self.logged_text, self.logged_at = text, now
            return f"{text}; {self.what_now}"
        return None

    def solved(self, message: str) -> str | None:
        """It works (again); message is the line to log if the failure was."""
        said = self.logged_text is not None
        self._reset()
        return message if said else None


@dataclass
class _Started:
    """A connection whose sshd was started at `at`."""

    at: float
    logged_in: bool = False


class Admission(Generic[Conn]):
    """The supervisor's decisions. A connection is whatever hashable value the
    caller names it by (the supervisor uses an object that holds its socket)."""

    def __init__(
        self,
        *,
        user: str,
        login_grace: float,
        max_unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED,
    ) -> None:
        self.user = user
        self.max_unauthenticated = max_unauthenticated
        self.login_grace = login_grace if login_grace > 0 else math.inf  # 0: no limit
        self.started: dict[Conn, _Started] = {}  # sshd runs (or is being started) for these
        self.queue: collections.deque[tuple[Conn, float]] = collections.deque()
        self.listening = False
        self.stopped = False
        self.cannot_listen = Problem("trying again")
        self.cannot_start = Problem("closing SSH connections at once until it can")  # sshd
        self.checked_at = -CHECK_AT_MOST_EVERY
        self.check_put_off = False  # a check was asked for while checks were throttled
        self.refused = 0  # connections closed at once because of the limit
        self.refused_logged_at = -LOG_EVERY
        self.accept_paused_until = 0.0
        self._lines: list[str] = []

    # Connections.

    def arrived(self, conn: Conn, now: float, *, hung_up: bool = False) -> Action:
        """A connection was accepted at now. hung_up: its client has closed it
        already without a byte (jupyter-server-proxy's readiness probe, a
        client gone already): no sshd, and nothing in the log. For a connection
        told to START, its sshd counts from now on: tell start_failed() if it
        could not be started, exited() when it ends."""
        if hung_up:
            return Action.CLOSE
        if self.cannot_start.text:
            self.refused += 1
            return Action.REFUSE
        if not self.queue and self.waiting_to_log_in(now) < self.max_unauthenticated:
            self.started[conn] = _Started(now)
            return Action.START
        if len(self.queue) < self.max_unauthenticated:
            # A burst of real logins (40 rsyncs at once) waits its turn.
            self.queue.append((conn, now))
            return Action.QUEUE
        self.refused += 1
        self._note_refusal(
            now,
            f"{self.max_unauthenticated} SSH connections are waiting to log in and as "
            "many more for their turn; new ones are closed until they log in or their "
            f"login grace time of {self.login_grace:g}s is over "
            "(c.SSHDProxy.max_unauthenticated)",
        )
        return Action.REFUSE

    def unconfirmed(self, now: float) -> list[Conn]:
        """The connections whose sshd's process title is worth reading (with
        title()) before a decision: those that count as waiting to log in."""
        return [
            conn
            for conn, started in self.started.items()
            if not started.logged_in and now - started.at < self.login_grace + PAST_GRACE
        ]

    def title(self, conn: Conn, text: str) -> None:
        """conn's sshd's process title reads text now."""
        started = self.started.get(conn)
        if started is not None and logged_in(text, self.user):
            started.logged_in = True

    def waiting_to_log_in(self, now: float) -> int:
        """Connections whose sshd runs and has not shown a logged-in user yet.
        (sshd ends them at the login grace time; one that is older still, by
        more than a moment, logged in in a way its title does not say.)"""
        return len(self.unconfirmed(now))

    def start_failed(self, conn: Conn, now: float, problem: str) -> None:
        """conn's sshd could not be started at all, for the reason problem
        (and its fix): close conn; until a check says otherwise, sshd cannot start."""
        self.started.pop(conn, None)
        self._say(self.cannot_start.failed(now, f"sshd cannot start: {problem}"))

    def exited(self, conn: Conn, now: float, code: int, *, client_gone: bool) -> bool:
        """conn's sshd ended at now with exit code (negative: the signal);
        client_gone: its client had hung up. Returns whether to check now
        that sshd can start (then tell checking() and checked())."""
        started = self.started.pop(conn, None)
        if started is None:
            return False
        # sshd failed at once while its client was still there: can sshd
        # start at all? (A client that hung up, or sent junk, explains an
        # early end too: then sshd -T says all is well.)
        if code == 0 or started.logged_in or now - started.at >= QUICK_FAILURE or client_gone:
            return False
        # Checks are at most one a second; one asked for sooner is put off to
        # the end of that second, never dropped: sshd that broke right after a
        # check must still be found out.
        if now - self.checked_at >= CHECK_AT_MOST_EVERY:
            return True
        self.check_put_off = True
        return False

    # The queue.

    def queued(self) -> list[Conn]:
        """The connections waiting for their turn, first come first."""
        return [conn for conn, _ in self.queue]

    def expire(self, now: float, hung_up: Collection[Conn] = ()) -> list[Conn]:
        """Take out of the queue, and return to be closed, those whose client
        hung up, those that waited the login grace time, and all of them while
        sshd cannot start."""
        gone = set(hung_up)
        closing: list[Conn] = []
        kept: collections.deque[tuple[Conn, float]] = collections.deque()
        for conn, queued_at in self.queue:
            if conn in gone or self.cannot_start.text or now - queued_at >= self.login_grace:
                closing.append(conn)
            else:
                kept.append((conn, queued_at))
        self.queue = kept
        return closing

    def next_turn(self, now: float) -> Conn | None:
        """The queued connection whose sshd to start now, if one may: as for
        arrived()'s START. (Ask again after telling the titles.)"""
        if not self.queue or self.waiting_to_log_in(now) >= self.max_unauthenticated:
            return None
        conn, _ = self.queue.popleft()
        self.started[conn] = _Started(now)
        return conn

    # Checks of sshd.

    def check_due(self, now: float) -> bool:
        """Whether to check now that sshd can start: a retry while it cannot,
        or a check that was put off."""
        retry = bool(self.cannot_start.text) and now >= self.cannot_start.retry_at
        return retry or (self.check_put_off and now - self.checked_at >= CHECK_AT_MOST_EVERY)

    def checking(self, now: float) -> None:
        """A check of sshd (sshd -T) begins at now."""
        self.checked_at = now
        self.check_put_off = False

    def checked(self, now: float, problem: str | None) -> None:
        """The check ended at now: sshd can start (problem None), or cannot,
        for the reason problem (and its fix)."""
        if problem is None:
            self._say(self.cannot_start.solved("sshd starts again; serving SSH connections"))
        else:
            self._say(self.cannot_start.failed(now, f"sshd cannot start: {problem}"))

    # The port.

    def listen_due(self, now: float) -> bool:
        """Whether to try to listen on the port now."""
        return not self.listening and now >= self.cannot_listen.retry_at

    def listen_failed(self, now: float, problem: str) -> None:
        """Listening failed at now, for the reason problem."""
        self.listening = False
        self._say(self.cannot_listen.failed(now, problem))

    def listened(self, again: str) -> None:
        """Listening works; again is the line to log if it had failed."""
        self.listening = True
        self._say(self.cannot_listen.solved(again))

    def accept_failed(self, now: float, reason: str) -> None:
        """accept() ran out of file descriptors or memory at now: leave the
        connections waiting in the kernel's queue for a moment."""
        self._note_refusal(now, f"cannot accept connections: {reason}")
        self.accept_paused_until = now + ACCEPT_PAUSE

    def accepting(self, now: float) -> bool:
        """Whether to accept connections now."""
        return self.listening and now >= self.accept_paused_until

    # The loop, the log, the status.

    def timeout(self, now: float) -> float:
        """How long the loop may sleep from now: until the next retry, at most a second."""
        # A queued connection waits for one that logs in: sshd's title says
        # so, and nothing wakes the loop for it.
        moments = [now + (QUEUE_POLL if self.queue else IDLE_POLL)]
        if self.accept_paused_until > now:
            moments.append(self.accept_paused_until)
        if not self.listening:
            moments.append(self.cannot_listen.retry_at)
        if self.cannot_start.text:
            moments.append(self.cannot_start.retry_at)
        if self.check_put_off:
            moments.append(self.checked_at + CHECK_AT_MOST_EVERY)
        return max(0.0, min(moments) - now)

    def stop(self) -> list[Conn]:
        """The supervisor stops: nothing is served any more. Returns the queued
        connections, to be closed."""
        self.stopped = True
        self.listening = False
        queued = self.queued()
        self.queue.clear()
        return queued

    def lines(self) -> list[str]:
        """The lines to log now (each taken once)."""
        lines, self._lines = self._lines, []
        return lines

    def status(self) -> dict[str, bool | str | None]:
        """What status.json says: whether SSH is served, and if not, why."""
        problem = self.cannot_listen.text if not self.listening else self.cannot_start.text
        return {
            "serving": self.listening and not problem and not self.stopped,
            "last_error": None if self.stopped else problem,
        }

    def _note_refusal(self, now: float, text: str) -> None:
        if now - self.refused_logged_at >= LOG_EVERY:
            self._say(f"{text}; {self.refused} refused so far")
            self.refused_logged_at = now

    def _say(self, line: str | None) -> None:
        if line is not None:
            self._lines.append(line)
