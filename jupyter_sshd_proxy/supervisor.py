"""Keep sshd running, and take every ssh session down with the Jupyter server.

jupyter-server-proxy starts this small process (not sshd itself) because its
supervisor restarts a process only when it exits non-zero, and sshd exits 0
on SIGTERM: the route would then be dead until the Jupyter server restarts.
Here sshd is restarted after any exit, with a short back-off when it keeps
failing. On Linux this process is also a child subreaper, so sessions whose
sshd died stay its descendants, and it ends them all when it stops; it stops
when the Jupyter server stops or dies.

    python -m jupyter_sshd_proxy.supervisor --state-dir DIR -- SSHD-ARGV...

DIR/status.json tells the Jupyter server sshd's pid; DIR (which also holds
sshd_config) is removed when the Jupyter server is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

RESTART_DELAYS = (0.05, 0.25, 0.5, 1.0)  # back-off while sshd keeps failing
HEALTHY_AFTER = 5.0  # seconds of uptime after which a crash is "the first" again
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping sessions
PARENT_DIED = signal.SIGUSR1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def log(message: str) -> None:
    print(f"[jupyter-sshd-proxy] {message}", file=sys.stderr, flush=True)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def descendants(root: int) -> list[int]:
    """Every process below root, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _process_parents():
        children.setdefault(ppid, []).append(pid)
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _process_parents():
    if os.path.isdir("/proc/self"):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stream:
                    fields = stream.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            yield int(entry), int(fields[1])
    else:
        output = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False
        ).stdout
        for line in output.splitlines():
            pid, ppid = line.split()
            yield int(pid), int(ppid)


class Supervisor:
    def __init__(self, sshd_argv: list[str], state_dir: str):
        self.sshd_argv = sshd_argv
        self.state_dir = state_dir
        self.status_path = os.path.join(state_dir, "status.json")
        self.parent = os.getppid()
        self.sshd: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.failures = 0
        self.restart_at = 0.0
        self.last_exit: int | None = None
        self.stop_signal: int | None = None

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signum in (*STOP_SIGNALS, PARENT_DIED):
            signal.signal(signum, self._on_stop_signal)
        # Linux: be told when the Jupyter server dies, and adopt orphaned sessions.
        _prctl(1, PARENT_DIED)  # PR_SET_PDEATHSIG
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
        try:
            while self.stop_signal is None and os.getppid() == self.parent:
                self._reap()
                if self.sshd is None and time.monotonic() >= self.restart_at:
                    self._start_sshd()
                timeout = 1.0
                if self.sshd is None:
                    timeout = max(0.0, min(timeout, self.restart_at - time.monotonic()))
                with contextlib.suppress(InterruptedError):
                    select.select([wake_read], [], [], timeout)
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
        finally:
            self._stop_everything()
        if self.stop_signal in STOP_SIGNALS:
            # Non-zero, so jupyter-server-proxy starts us again unless it was
            # the one that stopped us.
            return 128 + self.stop_signal
        return 0

    def _on_stop_signal(self, signum, _frame):
        self.stop_signal = signum

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None or os.getppid() != self.parent

    def _start_sshd(self) -> None:
        self.sshd = subprocess.Popen(
            self.sshd_argv,
            stdin=subprocess.DEVNULL,
            # If this supervisor is killed, sshd goes too, freeing the port for
            # the supervisor that jupyter-server-proxy starts in its place.
            preexec_fn=lambda: _prctl(1, signal.SIGTERM),  # PR_SET_PDEATHSIG
        )
        self.started_at = time.monotonic()
        self._write_status()

    def _reap(self) -> None:
        """Collect every exited child: sshd, and sessions adopted as subreaper."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.sshd is not None and pid == self.sshd.pid:
                self.sshd.returncode = os.waitstatus_to_exitcode(status)
                self._sshd_exited(self.sshd.returncode)

    def _sshd_exited(self, code: int) -> None:
        uptime = time.monotonic() - self.started_at
        self.failures = 0 if uptime > HEALTHY_AFTER else self.failures + 1
        delay = RESTART_DELAYS[min(self.failures, len(RESTART_DELAYS) - 1)]
        how = f"signal {-code}" if code < 0 else f"status {code}"
        pid, self.sshd = self.sshd.pid, None
        if self.stopping:
            return
        log(f"sshd (pid {pid}) exited with {how}; starting it again in {delay:g}s")
        self.last_exit = code
        self.restarts += 1
        self.restart_at = time.monotonic() + delay
        self._write_status()

    def _write_status(self) -> None:
        status = {
            "supervisor_pid": os.getpid(),
            "sshd_pid": self.sshd.pid if self.sshd else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }
        temporary = f"{self.status_path}.tmp"
        try:
            with open(temporary, "w") as stream:
                json.dump(status, stream)
            os.replace(temporary, self.status_path)
        except OSError as error:
            log(f"cannot write {self.status_path}: {error}")

    def _stop_everything(self) -> None:
        """End sshd and every session under us: SIGTERM, then SIGKILL."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        deadline = time.monotonic() + STOP_GRACE
        kill_signal = signal.SIGTERM
        while True:
            self._reap()
            remaining = descendants(os.getpid())
            if not remaining:
                break
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, kill_signal)
            if time.monotonic() > deadline:
                kill_signal = signal.SIGKILL
            time.sleep(0.05)
        if self.stop_signal in STOP_SIGNALS:
            # We may be started again with the same sshd_config: keep it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.status_path)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_sshd_proxy.supervisor")
    parser.add_argument(
        "--state-dir", required=True, help="directory of sshd_config and status.json"
    )
    parser.add_argument("sshd_argv", nargs=argparse.REMAINDER, help="-- sshd -D -e -f CONFIG")
    args = parser.parse_args(argv)
    sshd_argv = args.sshd_argv[1:] if args.sshd_argv[:1] == ["--"] else args.sshd_argv
    if not sshd_argv:
        parser.error("give the sshd command after --")
    return Supervisor(sshd_argv, args.state_dir).run()


if __name__ == "__main__":
    sys.exit(main())
