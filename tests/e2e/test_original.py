"""What users and operators of the original jupyter-sshd-proxy (0.3.0) rely
on, end to end against this package: its host key, which their laptops
pinned, and its test suite's scenarios (rewritten as ours, pinning host keys
where it turned checking off), with websocat exactly as its README and its
tests run it.

Each test runs for both accounts when the suite runs as root: as a fresh
unprivileged account (the original's defaults: ~/.ssh/... in its home) and
as this user (a HOME of its own under the test run directory).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pty
import random
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..support.helpers import VENV_BIN, Account, JupyterServer, SSHClient, wait_for
from ..support.servers import ServerSetup, remember_pid, start_sshd
from ..support.tls import make_ca


def legacy_key_path(setup) -> Path:
    """Where the original kept its host key: ~/.ssh/jupyter_sshd_hostkey."""
    return setup.account.home / ".ssh" / "jupyter_sshd_hostkey"


def legacy_env(setup, path: Path) -> dict:
    """For this user, whose real home is not the test's: name the key; for a
    fresh account the default (~/.ssh/jupyter_sshd_hostkey) finds it."""
    return {"JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY": str(path)} if setup.account.is_current else {}


def make_legacy_key(setup, path: Path, key_type: str | None) -> str:
    """A host key made as the original made it (`ssh-keygen -f PATH -q -N ''`,
    ssh-keygen's default type: RSA before OpenSSH 9.5, ed25519 since); the
    public line, as the original's known_hosts entries hold it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    setup.account.own(path.parent)
    chosen = ["-t", key_type] if key_type else []
    subprocess.run(["ssh-keygen", "-f", str(path), "-q", "-N", "", *chosen], check=True)
    setup.account.own(path, path.with_suffix(".pub"))
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def host_keys(server) -> list[tuple[str, str]]:
    code, body = server.request("GET", "/sshd-proxy/api/host-keys")
    assert code == 200, body
    return [(key["type"], key["key"]) for key in json.loads(body)["keys"]]


@pytest.fixture
def legacy_home(setup):
    """Where the original's host key goes for this account; removed afterwards."""
    if setup.account.is_current:
        path = setup.base / "original-home" / ".ssh" / "jupyter_sshd_hostkey"
    else:
        path = legacy_key_path(setup)
    yield path
    for leftover in (path, path.with_suffix(".pub")):
        leftover.unlink(missing_ok=True)


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_a_laptop_that_pinned_the_original_host_key_keeps_connecting_until_it_is_retired(
    setup, client_key, run_dir, legacy_home, key_type
):
    """The laptop knows only the original's key (made with ssh-keygen's
    default, RSA here, or ed25519 as OpenSSH 9.5 and later make it). With
    StrictHostKeyChecking=yes it connects; UpdateHostKeys teaches it our
    keys; once the operator retires the original's key, it still connects,
    and UpdateHostKeys drops the retired key from its known_hosts."""
    legacy = make_legacy_key(setup, legacy_home, key_type)
    known_hosts = run_dir / f"known_hosts-original-{setup.account.name}-{key_type}"
    known_hosts.write_text(f"jupyter-test {legacy}\n")

    def pinned() -> set[str]:
        return {" ".join(line.split()[1:3]) for line in known_hosts.read_text().splitlines()}

    server = setup.server(**legacy_env(setup, legacy_home)).start()
    try:
        start_sshd(server)
        pubs = [setup.host_key_dir / f"ssh_host_{kind}_key.pub" for kind in ("ed25519", "rsa")]
        ours = [" ".join(pub.read_text().split()[:2]) for pub in pubs]
        # The legacy key first: sshd presents it for its type. The API serves
        # every key sshd holds, so config-ssh pins them all.
        assert [" ".join(key) for key in host_keys(server)] == [legacy, *ours]

        laptop = SSHClient(server, client_key, known_hosts)
        result = laptop.ssh("echo still-trusted")
        assert result.stdout == b"still-trusted\n", result.stderr
        notice = f"upgraded from the original jupyter-sshd-proxy (found its host key {legacy_home},"
        assert server.log().count(notice) == 1

        learn = laptop.ssh_argv("true", options=["-o", "UpdateHostKeys=yes"])
        result = subprocess.run(learn, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert pinned() == {legacy, *ours}
    finally:
        server.stop()

    retired = {**legacy_env(setup, legacy_home), "JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY": "none"}
    server = setup.server(**retired).start()
    try:
        start_sshd(server)
        assert [" ".join(key) for key in host_keys(server)] == ours
        laptop = SSHClient(server, client_key, known_hosts)
        forget = laptop.ssh_argv("echo retired", options=["-o", "UpdateHostKeys=yes"])
        result = subprocess.run(forget, capture_output=True, timeout=60, check=False)
        assert result.stdout == b"retired\n", result.stderr
        assert pinned() == set(ours)
        assert legacy_home.exists(), "never deleted: retiring is the operator's call"
    finally:
        server.stop()


def test_an_unusable_original_host_key_is_left_out_with_one_line(setup, legacy_home):
    make_legacy_key(setup, legacy_home, None)
    legacy_home.chmod(0o644)  # sshd refuses a private key others can read
    server = setup.server(**legacy_env(setup, legacy_home)).start()
    try:
        start_sshd(server)
        served = host_keys(server)
        assert [kind for kind, _ in served] == ["ssh-ed25519", "ssh-rsa"]
        warning = (
            f"jupyter-sshd-proxy: the original jupyter-sshd-proxy's host key {legacy_home} "
            f'cannot be read (Load key "{legacy_home}": bad permissions); make it readable '
            f"by you only (chmod 600 {legacy_home}), or retire it with "
            "c.SSHDProxy.legacy_host_key = ''; until then, clients that pinned it are refused"
        )
        assert warning in server.log()
    finally:
        server.stop()


# The original's test suite (tests/test_ssh.py), its scenarios as ours.


def websocat_proxy_command(token: str, url: str) -> str:
    """The ProxyCommand as the original's tests and README write it: websocat
    from PATH, the header in double quotes (which ssh's shell removes)."""
    return f'websocat --binary -H="Authorization: token {token}" asyncstdio: {url}'


def laptop_env() -> dict:
    """The laptop's environment: websocat on PATH, as the original assumes."""
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}


@dataclass
class OriginalSuite:
    server: JupyterServer
    key: Path  # the laptop's private key; its .pub is the server's keys file
    known_hosts: Path
    directory: Path  # 0700, the server user's: keys, scp targets

    def options(self) -> list[str]:
        """The original's get_ssh_client_options(), with the host key pinned
        where it had "StrictHostKeyChecking=no  # FIXME"."""
        url = f"ws://%h:{self.server.port}/sshd/"
        options = [
            f"ProxyCommand={websocat_proxy_command(self.server.token, url)}",
            f"User={self.server.account.name}",
            f"IdentityFile={self.key}",
            "StrictHostKeyChecking=yes",
            f"UserKnownHostsFile={self.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "BatchMode=yes",
        ]
        return ["-F", "none", *(f"-o={option}" for option in options)]


@pytest.fixture(scope="module")
def original(setup, run_dir):
    """A server set up as the original's suite set one up: the key pair made
    in a 0700 directory of the server's user (it used the working directory,
    as /tmp will not do for sshd) and the public key file itself as
    JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH. (Its CI also set
    JUPYTER_SSHD_PROXY_LOG_LEVEL=DEBUG, under which sshd writes a debug line
    into the session's stderr, with the original as with this package: that
    is tested on its own below.)"""
    home = setup.base if setup.account.is_current else setup.account.home
    directory = home / f"tmp-original-{os.getpid()}"
    directory.mkdir(mode=0o700)
    setup.account.own(directory)
    key = directory / "authorized_keys"
    subprocess.run(["ssh-keygen", "-f", str(key), "-q", "-N", ""], check=True)
    setup.account.own(key.with_suffix(".pub"))
    env = {
        **{k: v for k, v in setup.env.items() if k != "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES"},
        "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH": f"{key}.pub",
    }
    server = JupyterServer(setup.account, run_dir, setup.token, env).start()
    try:
        start_sshd(server)
        known_hosts = run_dir / f"known_hosts-original-suite-{setup.account.name}"
        known_hosts.write_text("".join(f"127.0.0.1 {t} {k}\n" for t, k in host_keys(server)))
        yield OriginalSuite(server, key, known_hosts, directory)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_ssh_command_execution(original):
    result = subprocess.run(
        ["ssh", *original.options(), "127.0.0.1", "hostname"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=laptop_env(), check=False,
    )  # fmt: skip
    assert result.stdout.decode().strip() == socket.gethostname(), result.stderr
    # The upgrade is said once, at start.
    log = original.server.log()
    notice = "jupyter-sshd-proxy: upgraded from the original jupyter-sshd-proxy (found "
    assert log.count(notice) == 1
    assert f"{notice}JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH, kept as they were)" in log


def test_the_log_level_variable_reaches_sshd(setup, client_key, run_dir):
    """JUPYTER_SSHD_PROXY_LOG_LEVEL=DEBUG, as the original's CI ran: sshd's
    debug lines are in the server's log."""
    server = setup.server(JUPYTER_SSHD_PROXY_LOG_LEVEL="DEBUG").start()
    try:
        start_sshd(server)
        known_hosts = run_dir / f"known_hosts-debug-{setup.account.name}"
        known_hosts.write_text("".join(f"jupyter-test {t} {k}\n" for t, k in host_keys(server)))
        result = SSHClient(server, client_key, known_hosts).ssh("echo debug")
        assert result.stdout == b"debug\n", result.stderr
        assert "debug1: " in server.log()
    finally:
        server.stop()


def test_a_server_without_the_originals_settings_says_nothing_of_it(server):
    assert "upgraded from the original" not in server.log()


def test_ssh_interactive(original):
    """/bin/sh with no arguments, ssh on a terminal of its own (stdin, stdout
    and stderr), as pexpect gave it."""
    main, terminal = pty.openpty()
    attributes = termios.tcgetattr(terminal)
    attributes[3] &= ~termios.ECHO  # pexpect's echo=False
    termios.tcsetattr(terminal, termios.TCSANOW, attributes)
    process = subprocess.Popen(
        ["ssh", *original.options(), "127.0.0.1", "/bin/sh"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=laptop_env(),
    )  # fmt: skip
    os.close(terminal)
    try:
        os.write(main, b"hostname\n")
        assert read_line(main, 60).strip() == socket.gethostname().encode()
        os.write(main, b"exit\n")
        process.wait(60)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)


def read_line(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout} s (so far {line!r})"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1)
            assert chunk, f"the terminal closed (so far {line!r})"
            line += chunk
    return line


# Both the sftp protocol (scp's default now, "-s") and the old scp protocol ("-O").
@pytest.mark.parametrize("extra_scp_args", [["-s"], ["-O"]])
def test_scp(original, tmp_path, extra_scp_args):
    source = tmp_path / "source"
    file_contents = secrets.token_hex()
    source.write_text(file_contents)
    target = original.directory / f"target{extra_scp_args[0]}"
    result = subprocess.run(
        ["scp", "-v", *extra_scp_args, *original.options(), str(source), f"127.0.0.1:{target}"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=laptop_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert target.read_text() == file_contents


# The original's README: the ssh config block a user wrote, used as written.

ORIGINAL_README_BLOCK = (
    "Host <YOUR-JUPYTERHUB-DOMAIN>\n"
    "    User <YOUR-JUPYTERHUB-CONTAINER-USER-NAME>\n"
    '    ProxyCommand websocat --binary -H="Authorization: token <YOUR-JUPYTERHUB-TOKEN>" '
    "asyncstdio: wss://%h/user/<YOUR-JUPYTERHUB-USERNAME>/sshd/\n"
    "    IdentitiesOnly yes # Don't use password auth\n"
)


@pytest.fixture
def hub_like_server(run_dir, client_key):
    """A server at https://HOST/user/alice/ as a Hub serves it: on port 443 of a
    loopback address of its own (127.x.y.z), with a certificate for it from the
    test CA, which websocat trusts through SSL_CERT_FILE. Binding 443 needs
    root; otherwise it is ws://HOST:PORT/user/alice/, the one change to the line."""
    setup = ServerSetup(Account.current(), run_dir, client_key)
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    tls = os.getuid() == 0
    port = 443 if tls else _free_port(host)
    ca = make_ca(run_dir / f"tls-{host}", [host]) if tls else None
    argv = [
        str(VENV_BIN / "jupyter-server"), "--no-browser", f"--ip={host}", f"--port={port}",
        "--ServerApp.port_retries=0", "--ServerApp.base_url=/user/alice/",
        f"--ServerApp.root_dir={setup.base}",
    ]  # fmt: skip
    if ca:
        argv += [f"--ServerApp.certfile={ca.cert_file}", f"--ServerApp.keyfile={ca.key_file}"]
    if os.getuid() == 0:
        argv.append("--allow-root")
    env = {**os.environ, **setup.env, "JUPYTER_TOKEN": setup.token, "JUPYTER_PLATFORM_DIRS": "1"}
    with open(run_dir / f"jupyter-{host}.log", "wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = HubLikeServer(host, port, ca.ca_file if ca else None, setup.token, process)
    try:
        wait_for(server.ready, 60, f"jupyter server on {host}:{port}", interval=0.2)
        yield server
    finally:
        with contextlib.suppress(Exception):
            pid = server.get("/sshd-proxy/api/status").get("pid")
            if pid:
                remember_pid(pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class HubLikeServer:
    host: str
    port: int
    ca_file: Path | None
    token: str
    process: subprocess.Popen

    def get(self, path: str) -> dict:
        if self.ca_file:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=30, context=context
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(
                "GET", "/user/alice" + path, headers={"Authorization": f"token {self.token}"}
            )
            response = connection.getresponse()
            assert response.status == 200, response.status
            return json.loads(response.read())
        finally:
            connection.close()

    def ready(self) -> bool:
        assert self.process.poll() is None, "the Jupyter server exited"
        try:
            self.get("/api/status")
        except OSError:
            return False
        return True


def test_the_original_readme_ssh_config_works_as_written(hub_like_server, client_key, run_dir):
    server = hub_like_server
    user = Account.current().name
    block = (
        ORIGINAL_README_BLOCK.replace("<YOUR-JUPYTERHUB-DOMAIN>", server.host)
        .replace("<YOUR-JUPYTERHUB-CONTAINER-USER-NAME>", user)
        .replace("<YOUR-JUPYTERHUB-TOKEN>", server.token)
        .replace("<YOUR-JUPYTERHUB-USERNAME>", "alice")
    )
    if server.ca_file is None:
        block = block.replace("wss://%h/", f"ws://%h:{server.port}/")
    env = laptop_env()
    if server.ca_file:
        env["SSL_CERT_FILE"] = str(server.ca_file)
    laptop = run_dir / f"laptop-{server.host}"
    laptop.mkdir(mode=0o700)
    known_hosts = laptop / "known_hosts"
    config = laptop / "config"
    # The user's block as written, then what keeps this test off ~/.ssh.
    config.write_text(
        block
        + f"    IdentityFile {client_key}\n"
        + f"    UserKnownHostsFile {known_hosts}\n"
        + "    GlobalKnownHostsFile /dev/null\n"
        + "    StrictHostKeyChecking yes\n"
        + "    BatchMode yes\n"
    )
    # The first connection starts sshd; then the host keys are pinned.
    argv = ["ssh", "-F", str(config), server.host, "echo as-written"]
    subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    status = wait_for(
        lambda: (lambda s: s if s["running"] else None)(server.get("/sshd-proxy/api/status")),
        15,
        "sshd to run",
    )
    remember_pid(status["pid"])
    keys = server.get("/sshd-proxy/api/host-keys")["keys"]
    known_hosts.write_text("".join(f"{server.host} {k['type']} {k['key']}\n" for k in keys))
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert result.stdout == b"as-written\n", result.stderr.decode()
