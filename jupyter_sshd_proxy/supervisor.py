"""Hold sshd's socket for as long as the Jupyter server runs; one `sshd -i` per connection.

jupyter-server-proxy connects each /sshd/ WebSocket to a unix socket in a
directory of its own (mode 0700, made with mkdtemp) and starts this process
(not sshd) on that socket. It listens there itself and runs OpenSSH's inetd
mode, `sshd -i`, for every connection it accepts, with the connection as
sshd's stdin and stdout. There is no long-lived sshd whose death would leave
the socket dark: a connection that arrives the moment after an sshd was
killed gets a fresh sshd like any other. (sshd -D works the same way inside:
it re-executes itself for every connection. Here the listening socket is
only kept where no crash of sshd can take it away.)

Only the server's own user can reach the socket: it listens only in a
directory that is the user's and closed to everyone else (checked before
every bind), and on Linux it closes at once any connection whose peer is
another account (SO_PEERCRED; root aside). Other accounts on the host can
neither log in, nor hold a place among the connections waiting to log in,
nor count as sessions or activity, nor take the socket's name first.

What a listener's sshd_config would bound, this process bounds:

* At most --max-unauthenticated connections may be waiting to log in at
  once (MaxStartups does not apply to sshd -i). As many more wait for their
  turn without an sshd (a burst of real logins: 40 rsyncs started together),
  for at most the login grace time; more are closed at once. A connection
  waits to log in until sshd shows the user in its process title ("sshd: USER
  [priv]", "sshd: USER@notty"), and never longer than the login grace time,
  after which sshd itself ends it.
* When sshd cannot start at all (its program is gone, /run/sshd is missing,
  the host keys are unreadable), connections are closed at once instead of
  each starting an sshd that fails, `sshd -T` is tried again with a back-off
  of up to a minute, and one line a minute at most says why; so does
  status.json, which the status endpoint reads. A socket that cannot be
  made is retried the same way.

Each sshd's log lines go through a pipe of this process, which passes them
on to the Jupyter server's log as they are, and reads the logins in them.
Each connection starts with one line of ours, before sshd's first: its id
(or why it is refused). With --reports, the Jupyter server hears of logins,
ends of connections, refusals and start failures (see reports.py).

Beside the socket it listens on a relay socket (relay.py): the route hands
over an authorized connection there, and this process forks a relay for it,
which passes its bytes between the client and sshd from then on, outside the
Jupyter server (at most --max-relays at once; past that the route is told
no and relays the connection itself).

On Linux this process is a child subreaper, so session processes whose sshd
ended stay below it; it ends them all when it stops, and it stops when the
Jupyter server stops or dies. If it is killed itself, each sshd gets SIGTERM
(PR_SET_PDEATHSIG), jupyter-server-proxy starts a new supervisor (it exits
non-zero), and the new one ends the session processes the old one left.

    python -m jupyter_sshd_proxy.supervisor --state-dir DIR --socket PRIVATE_DIR/socket \\
        --sshd /usr/sbin/sshd --config DIR/sshd_config

DIR (which holds sshd_config and status.json) is removed when the Jupyter
server is gone.

What to do with each connection, when to check sshd, what to log and what
status.json says is decided by admission.Admission, which does no I/O; this
module does the I/O (the socket, fork and exec, /proc, signals, files) and
tells it what happened.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import procfs, relay, reports
from .admission import DEFAULT_MAX_UNAUTHENTICATED, LOG_EVERY, Action, Admission
from .sshd import LOGIN_GRACE_SECONDS, privsep_fix, run_sshd_test, sshd_argv

DEFAULT_MAX_RELAYS = 16  # as c.SSHDProxy.max_relays
RELAY_NICENESS = 10  # added to the supervisor's (nice(1)'s default)
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping sessions
PARENT_DIED = signal.SIGUSR1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def log(message: str) -> None:
    print(f"jupyter-sshd-proxy: {message}", file=sys.stderr, flush=True)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.prctl(option, value, 0, 0, 0)
    return result == 0


@dataclass(eq=False)
class Connection:
    """An accepted connection (Admission knows it by this object)."""

    sock: socket.socket  # kept until sshd exits, to see whether the client was still there
    process: subprocess.Popen[bytes] | None = None  # its sshd, once started
    id: str = ""  # what its first line said, and its reports say
    log: int | None = None  # the read end of its sshd's stderr
    partial: bytes = b""  # the start of a log line not ended yet
    login_reported: bool = False
    key: dict[str, Any] | None = None  # "Accepted key ... found at FILE:LINE" (LogLevel VERBOSE)


class Supervisor:
    def __init__(
        self,
        *,
        socket_path: str,
        sshd: str,
        config: str,
        state_dir: str,
        max_unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED,
        login_grace: float = LOGIN_GRACE_SECONDS,
        reports_path: str | None = None,
        max_relays: int = DEFAULT_MAX_RELAYS,
    ):
        self.socket_path = socket_path
        self.sshd = sshd
        self.config = config
        self.sshd_argv = sshd_argv(sshd, config)
        self.status_path = os.path.join(state_dir, "status.json")
        self.admission: Admission[Connection] = Admission(
            user=pwd.getpwuid(os.getuid()).pw_name,
            max_unauthenticated=max_unauthenticated,
            login_grace=login_grace,
        )
        self.pdeathsig_wrapper = pdeathsig_wrapper()
        self.parent = os.getppid()
        self.listener: socket.socket | None = None
        self.relay_listener: socket.socket | None = None  # see relay.py
        self.relay_path = relay.relay_socket_path(socket_path)
        self.relays: set[int] = set()  # their pids
        self.max_relays = max_relays
        self.running: dict[int, Connection] = {}  # by the pid of their sshd
        self.strangers = 0  # connections from other accounts, closed at once
        self.strangers_logged_at = -LOG_EVERY
        self.restarts = 0
        self.stop_signal: int | None = None
        self.reports = reports.Sender(reports_path)
        self.run_id = secrets.token_hex(3)  # with a counter, ids that no other run repeats
        self.accepted = 0
        self.waiting_reported = 0

    # The main loop.

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signum in (*STOP_SIGNALS, PARENT_DIED):
            signal.signal(signum, self._on_stop_signal)
        # Linux: be told when the Jupyter server dies, and adopt orphaned sessions.
        _prctl(PR_SET_PDEATHSIG, PARENT_DIED)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.restarts = self._previous_restarts()
        self.reports.send(type="hello", pid=os.getpid(), run=self.run_id, restarts=self.restarts)
        try:
            self._listen()
            self._end_leftovers()
            while not self.stopping:
                self._reap()
                now = time.monotonic()
                if self.admission.listen_due(now):
                    self._listen()
                if self.admission.check_due(now):
                    self._check_sshd()
                if self.admission.queued():
                    self._serve_queue()
                self._report_waiting()
                self.reports.flush()
                self._wait(wake_read)
        finally:
            self._stop_everything()
        if self.stop_signal in STOP_SIGNALS:
            # Non-zero, so jupyter-server-proxy starts us again unless it was
            # the one that stopped us.
            return 128 + self.stop_signal
        return 0

    def _wait(self, wake_read: int) -> None:
        """Sleep until a connection or a log line arrives, a child exits (the
        wake-up pipe), the reports can be sent, or Admission's next moment."""
        poller = select.poll()
        poller.register(wake_read, select.POLLIN)
        listener = self.listener
        if listener is not None and not self.admission.accepting(time.monotonic()):
            listener = None  # not listening for now
        if listener is not None:
            poller.register(listener, select.POLLIN)
        if self.relay_listener is not None:
            poller.register(self.relay_listener, select.POLLIN)
        logs = {conn.log: conn for conn in self.running.values() if conn.log is not None}
        for fd in logs:
            poller.register(fd, select.POLLIN)
        if self.reports.waiting:
            poller.register(self.reports.fileno(), select.POLLOUT)
        try:
            ready = dict(poller.poll(self.admission.timeout(time.monotonic()) * 1000))
        except InterruptedError:
            return
        for fd, conn in logs.items():
            if fd in ready:
                self._read_log(conn)
        if listener is not None and listener.fileno() in ready:
            self._accept_all()
        if self.relay_listener is not None and self.relay_listener.fileno() in ready:
            self._accept_relays()
        with contextlib.suppress(BlockingIOError):
            os.read(wake_read, 4096)

    def _on_stop_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None or os.getppid() != self.parent

    # The socket.

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            problem = private_directory_problem(os.path.dirname(self.socket_path))
            if problem is None:
                self._listen_for_relays()  # first: the route finds it once the socket is there
                _remove_stale_socket(self.socket_path)
                listener.bind(self.socket_path)
                os.chmod(self.socket_path, 0o600)
                listener.listen(socket.SOMAXCONN)
        except OSError as error:
            problem = f"{error.strerror}; restart the Jupyter server if it persists"
        if problem is not None:
            listener.close()
            self.admission.listen_failed(
                time.monotonic(), f"cannot listen on {self.socket_path}: {problem}"
            )
            self._log()
            self._write_status()
            return
        listener.setblocking(False)
        self.listener = listener
        self.admission.listened(f"listening on {self.socket_path} again")
        self._log()
        self._write_status()

    def _listen_for_relays(self) -> None:
        """The relay socket, beside the socket (relay.py). Without it the
        Jupyter server relays each connection itself, as it did before."""
        if self.relay_listener is not None or not self.max_relays:
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _remove_stale_socket(self.relay_path)
            listener.bind(self.relay_path)
            os.chmod(self.relay_path, 0o600)
            listener.listen(socket.SOMAXCONN)
        except OSError as error:
            listener.close()
            log(
                f"cannot listen on {self.relay_path}: {error.strerror}; the Jupyter server "
                "relays SSH connections itself"
            )
            return
        listener.setblocking(False)
        self.relay_listener = listener

    def _accept_relays(self) -> None:
        """Fork a relay for each connection handed over on the relay socket."""
        while self.relay_listener is not None:
            try:
                sock, _ = self.relay_listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors: the route waits, then relays itself
            if self._from_our_user(sock, self.relay_path) and len(self.relays) < self.max_relays:
                self._start_relay(sock)
            sock.close()  # (without a yes: the route relays this connection itself)

    def _start_relay(self, sock: socket.socket) -> None:
        supervisor = os.getpid()
        try:
            pid = os.fork()
        except OSError as error:
            log(f"cannot start a relay: {error.strerror}")
            return
        if pid == 0:  # the relay: it never returns to the supervisor's code
            code = 1
            try:
                code = _become_relay(sock, supervisor)
            finally:
                os._exit(code)
        self.relays.add(pid)
        with contextlib.suppress(OSError):
            sock.send(relay.YES, socket.MSG_DONTWAIT)

    def _accept_all(self) -> None:
        while self.listener is not None:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of file descriptors or memory: the connections wait
                    # in the kernel's queue for a moment.
                    self.admission.accept_failed(
                        time.monotonic(), error.strerror or os.strerror(error.errno)
                    )
                    self._log()
                    return
                continue  # the client gave up before we accepted (ECONNABORTED)
            if not self._from_our_user(sock, self.socket_path):
                sock.close()
                continue
            self._admit(Connection(sock))

    def _from_our_user(self, conn: socket.socket, path: str) -> bool:
        """The peer is this user (or root). Only they can reach the socket's
        directory; this says so again where the kernel can tell (Linux)."""
        uid = peer_uid(conn)
        if uid is None or uid in (os.getuid(), 0):
            return True
        self.strangers += 1
        now = time.monotonic()
        if now - self.strangers_logged_at >= LOG_EVERY:
            log(
                f"closed a connection to {path} from uid {uid}, another account "
                f"({self.strangers} so far); check the permissions of its directory"
            )
            self.strangers_logged_at = now
        return False

    def _admit(self, conn: Connection) -> None:
        """Start sshd for the connection, queue it, or close it at once."""
        now = time.monotonic()
        # One that has hung up already (jupyter-server-proxy's readiness
        # probe, a client gone) needs no count of who waits to log in.
        hung_up = _hung_up(conn.sock)
        if not hung_up:
            self._read_titles(now)
        action = self.admission.arrived(conn, now, hung_up=hung_up)
        if action in (Action.START, Action.QUEUE):
            self._greet(conn)
        if action is Action.START:
            self._start_sshd(conn)
        elif action is Action.REFUSE:
            self._refuse(conn, "sshd_failing" if self.admission.cannot_start.text else "limit")
        elif action is not Action.QUEUE:
            conn.sock.close()
            self._log()

    def _greet(self, conn: Connection) -> None:
        """Give the connection its id, and tell the other end (the route) first."""
        self.accepted += 1
        conn.id = f"{self.run_id}-{self.accepted}"
        with contextlib.suppress(OSError):  # a client gone: sshd finds out
            conn.sock.send(reports.greeting(conn.id), socket.MSG_DONTWAIT)

    def _refuse(self, conn: Connection, reason: str) -> None:
        """Close it, saying why first (the route tells its client)."""
        with contextlib.suppress(OSError):
            conn.sock.send(reports.refusal(reason), socket.MSG_DONTWAIT)
        conn.sock.close()
        self._log()
        self.reports.send(type="refused", reason=reason)

    def _serve_queue(self) -> None:
        """Start sshd for the queued connections that can have their turn now;
        close those that hung up or waited longer than the login grace time."""
        now = time.monotonic()
        gone = [conn for conn in self.admission.queued() if _hung_up(conn.sock)]
        for conn in self.admission.expire(now, hung_up=gone):
            conn.sock.close()
            self.reports.send(type="end", id=conn.id, logged_in=False)
        while self.admission.queued():
            self._read_titles(now)
            turn = self.admission.next_turn(now)
            if turn is None:
                return
            self._start_sshd(turn)

    def _start_sshd(self, conn: Connection) -> None:
        conn.sock.setblocking(True)
        log_read, log_write = os.pipe()
        try:
            process = subprocess.Popen(
                [*self.pdeathsig_wrapper, *self.sshd_argv],
                stdin=conn.sock.fileno(),
                stdout=conn.sock.fileno(),
                stderr=log_write,
                preexec_fn=None if self.pdeathsig_wrapper else _die_with(os.getpid()),
            )
        except OSError as error:
            os.close(log_read)
            conn.sock.close()
            self.admission.start_failed(
                conn,
                time.monotonic(),
                f"cannot run {self.sshd}: {error.strerror}; fix that, no restart needed",
            )
            self.reports.send(type="end", id=conn.id, logged_in=False)
            self.reports.send(type="start_failure")
            self._log()
            self._write_status()
            return
        finally:
            os.close(log_write)
        os.set_blocking(log_read, False)
        conn.process, conn.log = process, log_read
        self.running[process.pid] = conn

    # What sshd says.

    def _read_log(self, conn: Connection, drain: bool = False) -> None:
        """Pass sshd's log lines on to the Jupyter server's log and note its
        logins: what the pipe holds now, or (drain) everything up to its end."""
        while conn.log is not None:
            try:
                data = os.read(conn.log, 65536)
            except (BlockingIOError, InterruptedError):
                if not drain:
                    return
                data = b""  # sshd has exited; whoever else holds the pipe is not sshd
            except OSError:
                data = b""
            if not data:
                if not conn.partial:
                    os.close(conn.log)
                    conn.log = None
                    return
                data = b"\n"  # the last line, without its line end
            lines = (conn.partial + data).split(b"\n")
            conn.partial = lines.pop()
            if len(conn.partial) > 65536:  # no line end in sight: pass it on as it is
                lines.append(conn.partial)
                conn.partial = b""
            for line in lines:
                _write_log(line + b"\n")
                self._note_log_line(conn, line.rstrip(b"\r").decode("utf-8", "replace"))
            if not drain:
                return

    def _note_log_line(self, conn: Connection, line: str) -> None:
        said = reports.read_sshd_line(line)
        if said is None:
            return
        if said["kind"] == "key":
            conn.key = said
            return
        if conn.login_reported:
            return
        conn.login_reported = True
        key = conn.key if conn.key is not None else {}
        if key.get("fingerprint") != said["fingerprint"]:
            key = {}
        self.reports.send(
            type="login",
            id=conn.id,
            user=said["user"],
            key_type=said["key_type"],
            fingerprint=said["fingerprint"],
            key_file=key.get("key_file"),
            key_line=key.get("key_line"),
            certificate_id=said.get("certificate_id"),
            certificate_serial=said.get("certificate_serial"),
        )

    def _report_waiting(self) -> None:
        """Tell the Jupyter server how many connections wait to log in, when that changed."""
        now = time.monotonic()
        if self.running:
            self._read_titles(now)
        waiting = self.admission.waiting_to_log_in(now) + len(self.admission.queued())
        if waiting != self.waiting_reported:
            self.waiting_reported = waiting
            self.reports.send(type="waiting", count=waiting)

    def _read_titles(self, now: float) -> None:
        """Tell Admission the process titles of the sshd processes that count
        as waiting to log in: the title says when one has."""
        for conn in self.admission.unconfirmed(now):
            if conn.process is not None:
                self.admission.title(conn, procfs.cmdline(conn.process.pid))

    def _log(self) -> None:
        for line in self.admission.lines():
            log(line)

    # sshd itself.

    def _reap(self) -> None:
        """Collect every exited child: sshd, and session processes adopted as subreaper."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.relays.discard(pid)
            conn = self.running.pop(pid, None)
            if conn is None or conn.process is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            conn.process.returncode = code  # so that Popen never waits for it
            self._read_log(conn, drain=True)  # its last lines, before its end
            # Logged in as sshd's log says ("Accepted ..."): its title shows the
            # user as soon as the client names one, before any key is accepted.
            self.reports.send(type="end", id=conn.id, logged_in=conn.login_reported)
            # An early end while the client is still there asks for a check.
            # The client sees the end at once, not after the check: the next
            # connection is accepted only after it, so it learns the outcome.
            client_gone = _hung_up(conn.sock)
            conn.sock.close()
            if self.admission.exited(conn, time.monotonic(), code, client_gone=client_gone):
                self._check_sshd()

    def _check_sshd(self) -> None:
        """Can sshd start with its configuration? sshd -T says, with the reason."""
        self.admission.checking(time.monotonic())
        try:
            _, reason = run_sshd_test(self.sshd, self.config)
        except OSError as error:
            reason = f"cannot run {self.sshd}: {error.strerror}"
        except subprocess.TimeoutExpired:
            reason = f"{self.sshd} -T did not finish within 30 s"
        problem = None
        if reason is not None:
            fix = privsep_fix(reason)
            problem = f"{reason}; " + (
                f"create it with: {fix}" if fix else "fix that, no restart needed"
            )
        self.admission.checked(time.monotonic(), problem)
        if problem is not None:
            self.reports.send(type="start_failure")
        self._log()
        self._write_status()

    # Status and clean-up.

    def _previous_restarts(self) -> int:
        """A status file left by an earlier supervisor of this socket: we replace it."""
        try:
            with open(self.status_path) as stream:
                return int(json.load(stream).get("restarts", 0)) + 1
        except (OSError, ValueError, AttributeError):
            return 0

    def _write_status(self) -> None:
        status = {
            "supervisor_pid": os.getpid(),
            "socket": self.socket_path,
            **self.admission.status(),  # serving, last_error
            "restarts": self.restarts,
        }
        temporary = f"{self.status_path}.tmp"
        try:
            with open(temporary, "w") as stream:
                json.dump(status, stream)
            os.replace(temporary, self.status_path)
        except FileNotFoundError:
            pass  # the Jupyter server has removed the directory: it is stopping
        except OSError as error:
            log(f"cannot write {self.status_path}: {error.strerror}")

    def _end_leftovers(self) -> None:
        """End the session processes that a killed supervisor of this socket left.

        Its sshd processes went with it (SIGTERM from PR_SET_PDEATHSIG), but
        a session's commands may outlive sshd (a `sleep`, a `nohup` job): they
        were the old supervisor's below it, and now belong to nobody. sshd put
        SSH_CONNECTION="UNKNOWN 65535 SOCKET_PATH 65535" into their environment.
        """
        if not procfs.available():
            return
        leftovers = [
            pid
            for pid in procfs.pids()
            if pid != os.getpid()
            and procfs.owner(pid) == os.getuid()
            and _connected_through(procfs.environ(pid).get("SSH_CONNECTION", ""), self.socket_path)
            and not any(_is_supervisor(p) for p in procfs.ancestors(pid))
        ]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftovers:
            log(f"ended {len(leftovers)} session process(es) that an earlier supervisor left")

    def _stop_everything(self) -> None:
        """Stop listening, then end every sshd and session under us: SIGTERM, then SIGKILL."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
        if self.relay_listener is not None:
            self.relay_listener.close()
            self.relay_listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.relay_path)
        for conn in self.admission.stop():  # the queued ones
            conn.sock.close()
            self.reports.send(type="end", id=conn.id, logged_in=False)
        for conn in self.running.values():
            conn.sock.close()
        deadline = time.monotonic() + STOP_GRACE
        kill_signal = signal.SIGTERM
        while True:
            self._reap()
            remaining = procfs.descendants(os.getpid())
            if not remaining:
                break
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, kill_signal)
                    if kill_signal == signal.SIGTERM:
                        os.kill(pid, signal.SIGCONT)  # a stopped process handles SIGTERM
            if time.monotonic() > deadline:
                kill_signal = signal.SIGKILL
            time.sleep(0.05)
        # The status file stays, saying that nothing is served: a supervisor
        # started again on this socket counts the restart.
        self._write_status()
        self._send_last_reports()

    def _send_last_reports(self) -> None:
        """What is left to report, for at most a moment (the Jupyter server may be gone)."""
        deadline = time.monotonic() + 1.0
        while self.reports.unsent and time.monotonic() < deadline:
            self.reports.flush()
            if self.reports.unsent:
                time.sleep(0.01)
        self.reports.close()


def _become_relay(sock: socket.socket, supervisor: int) -> int:
    """In a child just forked: shed the supervisor's state, relay one connection."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, *STOP_SIGNALS, PARENT_DIED):
        signal.signal(signum, signal.SIG_DFL)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # its sshd ends with the supervisor: so does it
    if os.getppid() != supervisor:
        return 1
    # Where the cores are busy, the user's notebooks and the Jupyter server
    # come before moving bytes: a transfer slows down, a notebook does not.
    with contextlib.suppress(OSError):
        os.nice(RELAY_NICENESS)
    # Every descriptor but stderr and this connection's: the others' sockets
    # held here would keep their connections open after they end.
    keep = {0, 1, 2, sock.fileno()}
    for fd in _open_descriptors():
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    return relay.serve(sock)


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux
        return list(range(3, min(os.sysconf("SC_OPEN_MAX"), 65536)))


def _write_log(line: bytes) -> None:
    """One of sshd's lines, to our stderr (the Jupyter server's log), as sshd wrote it."""
    with contextlib.suppress(OSError):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


def private_directory_problem(directory: str) -> str | None:
    """Why another account could connect to a socket in directory (or put one
    there first), if it could: it must be this user's, mode 0700 or tighter,
    and not a symbolic link."""
    try:
        st = os.lstat(directory)
    except OSError as error:
        return f"its directory {directory}: {error.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    if st.st_uid != os.getuid():
        return f"its directory {directory} belongs to uid {st.st_uid}, not to this user"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return (
            f"its directory {directory} is mode {stat.S_IMODE(st.st_mode):04o}, so other "
            "accounts could connect; it must be 0700"
        )
    return None


def _remove_stale_socket(path: str) -> None:
    """A socket left by a supervisor that was killed: ours (the directory is
    private), and nobody listens on it any more."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    os.unlink(path)


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket; None where
    the kernel does not say (not Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, 12))
    except OSError:
        return None
    return int(uid)


def _connected_through(ssh_connection: str, socket_path: str) -> bool:
    """Whether SSH_CONNECTION is that of a connection on socket_path. On a unix
    socket sshd says "UNKNOWN 65535 SOCKET_PATH 65535": the local address is
    the socket's path."""
    local, _, _port = ssh_connection.rpartition(" ")
    return local.endswith(f" {socket_path}")


def _hung_up(conn: socket.socket) -> bool:
    """The other end has closed the connection already, without a byte."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False  # open, nothing sent yet
    except OSError:
        return True  # reset


def _die_with(parent: int) -> Callable[[], None]:
    """What the child runs before exec: SIGTERM when the supervisor dies (or has died)."""

    def set_pdeathsig() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return set_pdeathsig


def pdeathsig_wrapper() -> list[str]:
    """`setpriv --pdeathsig TERM --` where util-linux has it (2.33 and later).

    Each sshd must get SIGTERM when the supervisor dies. A Python preexec_fn
    could ask for that, but it makes subprocess fork the whole interpreter
    instead of using vfork: 2.8 ms per connection rather than 0.2 ms.
    """
    setpriv = shutil.which("setpriv")
    if not setpriv or not sys.platform.startswith("linux"):
        return []
    wrapper = [setpriv, "--pdeathsig", "TERM", "--"]
    try:
        works = subprocess.run([*wrapper, "true"], capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return []
    return wrapper if works == 0 else []


def _is_supervisor(pid: int) -> bool:
    return "jupyter_sshd_proxy.supervisor" in procfs.cmdline(pid) and procfs.alive(pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_sshd_proxy.supervisor")
    parser.add_argument("--state-dir", required=True, help="where status.json is written")
    parser.add_argument("--socket", required=True, help="the unix socket to listen on")
    parser.add_argument("--sshd", required=True, help="the sshd program")
    parser.add_argument("--config", required=True, help="its sshd_config")
    parser.add_argument(
        "--max-unauthenticated",
        type=int,
        default=DEFAULT_MAX_UNAUTHENTICATED,
        help="connections that may be waiting to log in at once",
    )
    parser.add_argument(
        "--login-grace",
        type=float,
        default=LOGIN_GRACE_SECONDS,
        help="sshd's LoginGraceTime, in seconds",
    )
    parser.add_argument(
        "--max-relays",
        type=int,
        default=DEFAULT_MAX_RELAYS,
        help="connections relayed by processes of their own at once (relay.py)",
    )
    parser.add_argument(
        "--reports", help="the Jupyter server's unix socket for reports (see reports.py)"
    )
    args = parser.parse_args(argv)
    return Supervisor(
        socket_path=args.socket,
        sshd=args.sshd,
        config=args.config,
        state_dir=args.state_dir,
        max_unauthenticated=args.max_unauthenticated,
        login_grace=args.login_grace,
        reports_path=args.reports,
        max_relays=args.max_relays,
    ).run()


if __name__ == "__main__":
    sys.exit(main())
