"""What Linux's /proc says about processes, read in one place.

The supervisor ends the processes below it, the status endpoint counts SSH
connections, the activity tracker reads their I/O counters, and the tests
prove that nothing was left behind: all of them ask the same questions (who
are the children of this process, which program does it run, is it still
alive), and they must get the same answers. Each function reads /proc once,
tolerates processes that vanish while it reads (they do, all the time), and
returns None, False or an empty list rather than raising.

Elsewhere (macOS, BSD) only the process tree is available, through `ps`; the
rest answers "unknown".
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

PROC = "/proc"


def available() -> bool:
    """True where /proc describes processes (Linux)."""
    return os.path.isdir(f"{PROC}/self")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, ..."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as stream:
            text = stream.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain anything.
    return text.rsplit(b")", 1)[1].decode().split()


def pids() -> list[int]:
    """Every process id, in no particular order."""
    return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]


def parent_links() -> Iterator[tuple[int, int]]:
    """(pid, parent pid) for every process."""
    if not available():
        output = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False
        ).stdout
        for line in output.splitlines():
            pid_text, ppid_text = line.split()
            yield int(pid_text), int(ppid_text)
        return
    for pid in pids():
        fields = _stat_fields(pid)
        if fields:
            yield pid, int(fields[1])


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def ancestors(pid: int) -> list[int]:
    """The parent, its parent, and so on up to (not including) pid 0."""
    found = []
    current = parent(pid)
    while current and current not in found:
        found.append(current)
        current = parent(current)
    return found


def children(pid: int) -> list[int]:
    return [child for child, ppid in parent_links() if ppid == pid]


def descendants(root: int) -> list[int]:
    """Every process below root, parents before children."""
    tree: dict[int, list[int]] = {}
    for pid, ppid in parent_links():
        tree.setdefault(ppid, []).append(pid)
    found, queue = [], [root]
    while queue:
        for child in tree.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    if fields is None:
        if available():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] not in ("Z", "X")


def state(pid: int) -> str | None:
    """The kernel's one-letter state: R running, S sleeping, T stopped, Z zombie..."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def program(pid: int) -> str | None:
    """The file name of the program the process runs ("sshd", "sshd-session")."""
    try:
        return os.path.basename(os.readlink(f"{PROC}/{pid}/exe"))
    except OSError:
        return None


def cmdline(pid: int) -> str:
    """The command line, words joined by spaces; a process may rewrite it (sshd
    shows "sshd: user@pts/0" there). Empty when unknown."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as stream:
            raw = stream.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def environ(pid: int) -> dict[str, str]:
    """The environment the process was started with (empty when unreadable:
    another user's process, or one that may not be inspected)."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as stream:
            raw = stream.read()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def owner(pid: int) -> int | None:
    """The uid that owns the process."""
    try:
        return os.stat(f"{PROC}/{pid}").st_uid
    except OSError:
        return None


def io_bytes(pid: int) -> int | None:
    """Bytes the process has read and written so far, through any file or
    socket (rchar + wchar)."""
    try:
        with open(f"{PROC}/{pid}/io") as stream:
            fields = dict(line.split(":", 1) for line in stream if ":" in line)
        return int(fields["rchar"]) + int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of the process (VmRSS)."""
    return _kib_field(pid, "status", "VmRSS")


def pss_bytes(pid: int) -> int | None:
    """The process's share of memory (Pss): its own pages, and its part of the
    pages it shares with others, such as sshd's libraries."""
    return _kib_field(pid, "smaps_rollup", "Pss")


def _kib_field(pid: int, file: str, field: str) -> int | None:
    """The "FIELD:  N kB" line of /proc/PID/FILE, in bytes."""
    try:
        with open(f"{PROC}/{pid}/{file}") as stream:
            for line in stream:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    """How many file descriptors the process has open."""
    try:
        return len(os.listdir(f"{PROC}/{pid}/fd"))
    except OSError:
        return None


def processes_mentioning(text: str) -> list[str]:
    """Live processes (other than this one) whose command line contains text,
    as "PID: COMMAND LINE"."""
    found = []
    for pid in pids():
        if pid == os.getpid():
            continue
        line = cmdline(pid)
        if text in line and alive(pid):
            found.append(f"{pid}: {line}")
    return found
