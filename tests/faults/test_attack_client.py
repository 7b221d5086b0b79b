"""Attacks on the laptop side by a hostile (or merely broken) server, URL or laptop.

The tests above "held" were breaks of the client's rules (a refusal is one
line and writes nothing, no token in any output, host keys pinned, no hang
without a deadline), each found failing and since fixed; their docstrings
tell the attack and the fix. test_held_* tests: attacks that the client
withstood from the start, kept as guards.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from jupyter_sshd_proxy import procfs

from ..support.attack_server import ScriptedServer, websocket_accept
from ..support.hostile import AUTHORIZED_KEYS, ED25519, HOST_KEYS, STATUS, Answer, HostileServer
from ..support.laptop import CLI, EXISTING_CONFIG, env_with_token, laptop_home, run_cli, snapshot

TOKEN = "secret-token-3f9a"


def encoded(path: str) -> str:
    """path as the client sends it: every character outside A-Za-z0-9-._~/%:@+=,
    percent-encoded (UTF-8), so that no shell reads anything in the URL."""
    return quote(path, safe="/%:@+=,~")


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


def good_answers(server: HostileServer, prefix: str = "") -> None:
    """server answers like a good one under prefix (a path such as /user/alice)."""
    server.answers[("GET", prefix + STATUS)] = Answer.json({"running": True, "user": "jovyan"})
    server.answers[("GET", prefix + HOST_KEYS)] = Answer.json(
        {"keys": [{"type": "ssh-ed25519", "key": ED25519}]}
    )
    server.answers[("POST", prefix + AUTHORIZED_KEYS)] = Answer.json({}, status=201)


@pytest.fixture
def hostile():
    with HostileServer() as server:
        good_answers(server)
        yield server


def config_ssh(
    url: str, laptop: Path, *more: str, name: str | None = "myhub", timeout: float = 60, **env: str
):
    args = ["config-ssh", url, "--ssh-config", str(laptop / ".ssh" / "config"), *more]
    if name:
        args.append(f"--name={name}")
    return run_cli(*args, token=TOKEN, timeout=timeout, **env)


def ssh_effective(config: Path, host: str) -> dict[str, str]:
    """What ssh would really use for host: `ssh -G`, the first value of each option."""
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True
    ).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values


def one_line(stderr: str) -> None:
    """The rule for every refusal: one line on stderr, no traceback."""
    last = stderr.strip().splitlines()[-1:] or [""]
    assert "Traceback" not in stderr, f"a traceback ending in {last[0]!r}"
    assert stderr.count("\n") == 1, stderr


# ---------------------------------------------------------------- breaks, fixed


def test_a_broken_chunked_error_answer_is_one_line(laptop):
    """500 with a chunked body whose chunk size is not hex: rest.call() read the
    error body inside its `except HTTPError` clause, so the IncompleteRead
    escaped. Fixed: the error body is read in a try of its own; the status speaks."""

    def answer(sock, request, stop):
        sock.sendall(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")

    with ScriptedServer(answer) as server:
        before = snapshot(laptop)
        result = config_ssh(server.url, laptop)
    assert result.returncode == 1
    one_line(result.stderr)
    assert snapshot(laptop) == before


def test_an_error_answer_that_stalls_is_one_line(laptop):
    """500 that promises 1000 bytes and sends none: TimeoutError from the error
    body was a traceback. Fixed as the one above."""

    def answer(sock, request, stop):
        sock.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000\r\n\r\n")
        stop.wait(30)

    with ScriptedServer(answer) as server:
        result = config_ssh(server.url, laptop)
    assert result.returncode == 1
    one_line(result.stderr)


def test_an_answer_dripping_one_byte_at_a_time_has_a_deadline():
    """ServerAPI's timeout is per recv(), not per answer: a server that sends a
    byte every half second inside a 1 s timeout holds the client for as long as it
    likes (config-ssh, doctor and the ProxyCommand's status call all wait).
    Fixed: a deadline for the whole answer (read1() in a loop, and a watchdog
    that shuts the socket)."""
    from jupyter_sshd_proxy_client.rest import ServerAPI

    def answer(sock, request, stop):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: 200\r\n\r\n")
        for _ in range(200):
            if stop.wait(0.5):
                return
            sock.sendall(b" ")

    outcome: list[object] = []
    with ScriptedServer(answer) as server:
        api = ServerAPI(server.url, TOKEN, timeout=1)

        def call():
            try:
                outcome.append(api.get("sshd-proxy/api/status", "status"))
            except Exception as error:
                outcome.append(error)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(8)
        still_waiting = thread.is_alive()
    assert not still_waiting, "ServerAPI(timeout=1) still waiting for one answer after 8 s"
    assert str(outcome[0]) == f"no complete answer from {server.url} within 1s"


def test_headers_dripping_one_at_a_time_have_a_deadline():
    """The same with the headers: the watchdog shuts the socket at the deadline."""
    from jupyter_sshd_proxy_client.errors import APIError
    from jupyter_sshd_proxy_client.rest import ServerAPI

    def answer(sock, request, stop):
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.wait(0.3):
            sock.sendall(b"X-Slow: 1\r\n")

    with ScriptedServer(answer) as server:
        api = ServerAPI(server.url, TOKEN, timeout=1)
        started = time.monotonic()
        with pytest.raises(APIError, match=r"^no complete answer from http://\S+ within 1s$"):
            api.get("sshd-proxy/api/status", "status")
        assert time.monotonic() - started < 3


def test_an_http_url_to_another_host_is_warned_about(laptop):
    """Once, by config-ssh (the ProxyCommand says nothing: ssh shows it every time)."""
    result = config_ssh("http://nowhere.invalid/user/alice/", laptop, timeout=30)
    assert result.stderr.splitlines()[0] == (
        "jupyter-sshd-proxy: http:// sends the token unencrypted; use https://"
    )
    assert result.stderr.count("unencrypted") == 1


def test_start_follows_a_progress_stream_for_start_timeout_in_all(monkeypatch):
    """`proxy --start`: START_TIMEOUT is the socket timeout of each read, not a
    deadline; a Hub that keeps sending progress events keeps the ProxyCommand
    (and the ssh or VS Code waiting on it) for ever. Fixed: START_TIMEOUT in all."""
    from jupyter_sshd_proxy_client import hub_start

    monkeypatch.setattr(hub_start, "START_TIMEOUT", 2)

    def answer(sock, request, stop):
        if request.method == "POST":
            sock.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
            return
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        while not stop.wait(0.5):
            sock.sendall(b'data: {"progress": 50, "message": "pending"}\n\n')

    lines: list[str] = []
    outcome: list[object] = []
    with ScriptedServer(answer) as server:

        def start():
            try:
                hub_start.start_server(server.url + "user/alice/", TOKEN, lines.append)
                outcome.append("ready")
            except Exception as error:
                outcome.append(error)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(10)
        still_waiting = thread.is_alive()
    assert not still_waiting, (
        f"start_server with START_TIMEOUT=2 still following the stream after 10 s "
        f"({len(lines)} progress lines printed)"
    )
    assert str(outcome[0]) == (
        "alice's server was not ready within 2s; see its progress on the Hub's home page, "
        "then connect again"
    )


def _rss_mib(pid: int) -> int:
    return (procfs.rss_bytes(pid) or 0) // (1024 * 1024)


def test_one_websocket_message_cannot_take_all_memory():
    """The ProxyCommand connects with max_size=None: one binary frame that claims
    1 GiB is buffered whole before a byte reaches ssh. The test stops at 300 MiB.
    Fixed: max_size is 4 MiB, and a larger message is one line."""
    size = 1 << 30

    def answer(sock, request, stop):
        if not request.is_upgrade:
            sock.sendall(b"HTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n")
            return
        sock.sendall(websocket_accept(request))
        sock.sendall(bytes([0x82, 127]) + struct.pack(">Q", size))
        chunk = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            if stop.is_set():
                return
            sock.sendall(chunk)

    with ScriptedServer(answer) as server:
        proxy = subprocess.Popen(
            [CLI, "proxy", server.url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=env_with_token(TOKEN),
        )  # fmt: skip
        peak = 0
        try:
            deadline = time.monotonic() + 30
            while proxy.poll() is None and time.monotonic() < deadline and peak < 300:
                time.sleep(0.2)
                peak = max(peak, _rss_mib(proxy.pid))
        finally:
            ended = proxy.poll() is not None
            if not ended:
                proxy.kill()
            _, stderr = proxy.communicate()
    assert peak < 300, f"the ProxyCommand grew to {peak} MiB on one WebSocket message"
    # Refused at the frame's header (max_size 4 MiB), in one line.
    assert ended, "the ProxyCommand still reading the message"
    assert proxy.returncode == 255
    one_line(stderr.decode())
    assert "sent a WebSocket message of more than 4 MiB" in stderr.decode()


@pytest.mark.parametrize(
    "location",
    [
        b"https://hub.example.org/sshd/",  # every ingress that moves http to https
        b"/sshd/#fragment",
        b"https://e\x9b31mvil/",  # a C1 CSI, printed raw in the traceback
    ],
)
def test_a_websocket_redirect_to_a_non_ws_url_is_one_line(location):
    """websockets parses the Location (InvalidURI) before it notices our own socket;
    InvalidURI is no InvalidHandshake, so open_websocket() lets it through:
    a traceback, exit status 1 instead of 255, the server's header printed raw.
    Fixed: any WebSocketException is one line, made printable (a redirect to
    https:// says to use that URL)."""

    def answer(sock, request, stop):
        sock.sendall(
            b"HTTP/1.1 301 Moved\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
        )

    with ScriptedServer(answer) as server:
        result = subprocess.run(
            [CLI, "proxy", server.url], stdin=subprocess.DEVNULL, capture_output=True,
            env=env_with_token(TOKEN), timeout=30,
        )  # fmt: skip
    stderr = result.stderr.decode("utf-8", "replace")
    assert "\x9b" not in stderr, "a C1 control character from the Location header"
    one_line(stderr)
    assert result.returncode == 255, stderr


def test_an_earlier_host_star_does_not_void_the_pinned_host_key(hostile, laptop):
    """The block is appended; ssh takes the first value of each option, so a
    `Host *` above it (common in dev setups) wins: config-ssh says "host keys
    pinned" and exits 0, and ssh checks no host key at all. Fixed: a new block
    goes at the top (ending in `Host *`), and `ssh -G` must agree before
    anything is written."""
    config = laptop / ".ssh" / "config"
    config.write_text("Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n")
    result = config_ssh(hostile.url, laptop)
    assert result.returncode == 0, result.stderr
    assert "host keys pinned" in result.stdout
    effective = ssh_effective(config, "myhub")
    known_hosts = laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts"
    assert (effective["stricthostkeychecking"], effective["userknownhostsfile"]) == (
        "true",
        str(known_hosts),
    )


def test_an_older_block_below_a_host_star_is_refused_until_it_moves(hostile, laptop):
    """An existing block is updated in place: one that an earlier version appended
    below `Host *` would still lose to it. `ssh -G` says so before anything is
    written, and the line names the setting and the fix."""
    config = laptop / ".ssh" / "config"
    old_block = (
        "# >>> jupyter-sshd-proxy myhub >>>\nHost myhub\n    User jovyan\n"
        "# <<< jupyter-sshd-proxy myhub <<<\n"
    )
    config.write_text("Host *\n    StrictHostKeyChecking no\n\n" + old_block)
    before = snapshot(laptop)
    result = config_ssh(hostile.url, laptop)
    assert result.returncode == 1
    one_line(result.stderr)
    assert result.stderr == (
        "jupyter-sshd-proxy: ssh would not use the block's StrictHostKeyChecking for myhub: "
        f"something above it in {config} (a `Host` or `Match` that matches myhub, or a file "
        "it includes) sets 'false'; move that below the jupyter-sshd-proxy blocks, or remove "
        "the block for myhub and run config-ssh again to have it written at the top\n"
    )
    assert snapshot(laptop) == before
    assert ("POST", AUTHORIZED_KEYS) not in hostile.requests
    # As the line says: without the old block, the new one goes on top, and holds.
    config.write_text("Host *\n    StrictHostKeyChecking no\n")
    assert config_ssh(hostile.url, laptop).returncode == 0
    assert ssh_effective(config, "myhub")["stricthostkeychecking"] == "true"


def test_a_named_server_gets_a_block_of_its_own(laptop):
    """/user/alice/ and /user/alice/gpu/ both became Host hub-alice: the second
    config-ssh silently replaced the first block, its pinned host key and its
    token (http:// and https:// of one server collide the same way). Fixed: a
    named server's Host name ends in its name (hub-alice-gpu)."""
    with HostileServer() as server:
        good_answers(server, "/user/alice")
        good_answers(server, "/user/alice/gpu")
        first = config_ssh(server.url + "user/alice/", laptop, name=None)
        second = config_ssh(server.url + "user/alice/gpu/", laptop, name=None)
    assert first.returncode == 0, first.stderr
    config = (laptop / ".ssh" / "config").read_text()
    assert "/user/alice/\n" in config, "the default server's block is gone"
    assert second.returncode == 0
    assert "/user/alice/gpu/\n" in config


def _block_for(laptop: Path, name: str, url: str) -> str:
    """A block for name and url, as config-ssh writes it, at the top of the config."""
    from jupyter_sshd_proxy_client import ssh_files

    own = laptop / ".ssh" / "jupyter-sshd-proxy"
    block = ssh_files.render_block(
        name=name, user="jovyan", proxy_argv=["python3", "-m", "jupyter_sshd_proxy_client", "proxy",
        "--token-file", str(own / f"{name}.token"), url], identity_file=str(own / "id"),
        known_hosts=str(own / "known_hosts"),
    )  # fmt: skip
    config = laptop / ".ssh" / "config"
    config.write_text(ssh_files.put_block(config.read_text(), name, block))
    return config.read_text()


def test_a_block_for_another_server_of_the_same_name_is_not_replaced(laptop):
    """Two servers whose URLs make the same Host name (/prefix/user/alice/ and
    /user/alice/): the block of the first is not replaced by the second unless
    --name says so."""
    with HostileServer() as server:
        good_answers(server, "/user/alice")
        name = f"127.0.0.1-{server.httpd.server_address[1]}-alice"
        before = _block_for(laptop, name, server.url + "prefix/user/alice/")
        refused = config_ssh(server.url + "user/alice/", laptop, name=None)
        assert refused.returncode == 1
        one_line(refused.stderr)
        assert f"has Host {name} for another server, {server.url}prefix/user/alice/" in (
            refused.stderr
        )
        assert f"--name {name} to replace that block" in refused.stderr
        assert (laptop / ".ssh" / "config").read_text() == before
        assert ("POST", AUTHORIZED_KEYS) not in server.requests
        replaced = config_ssh(server.url + "user/alice/", laptop, name=name)
        assert replaced.returncode == 0, replaced.stderr
    config = (laptop / ".ssh" / "config").read_text()
    assert f" {server.url}user/alice/\n" in config
    assert "prefix" not in config


def test_an_https_block_is_not_replaced_by_an_http_one(laptop):
    """http:// would send the token in clear from then on: not without --name."""
    with HostileServer() as server:
        good_answers(server)
        name = f"127.0.0.1-{server.httpd.server_address[1]}"
        https = server.url.replace("http://", "https://")
        before = _block_for(laptop, name, https)
        refused = config_ssh(server.url, laptop, name=None)
        assert refused.returncode == 1
        one_line(refused.stderr)
        assert f"has Host {name} for {https}: refusing to replace it with {server.url}" in (
            refused.stderr
        )
        assert (laptop / ".ssh" / "config").read_text() == before
        # The other way, http:// to https://, is the same server: its block is updated
        # (here the same URL again).
        _block_for(laptop, name, server.url)
        assert config_ssh(server.url, laptop, name=None).returncode == 0


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_the_proxycommand_runs_nothing_else_in_the_users_shell(laptop):
    """ssh runs ProxyCommand with $SHELL -c. shlex.join() quotes for POSIX sh;
    in fish, \\' inside single quotes is an escaped quote, so a URL with \\' "
    ends the quoting and (cmd) runs on every `ssh NAME`. Fixed: the URL's path
    is percent-encoded outside A-Za-z0-9-._~/%:@+=, so nothing in it is quoted."""
    marker = laptop / "PWNED"
    with HostileServer() as server:
        url = server.url + "a\\'\"(id>" + str(marker) + ")\\'/"
        good_answers(server, encoded(urlsplit(url).path).rstrip("/"))
        result = config_ssh(url, laptop, name="w")
        assert result.returncode == 0, result.stderr
        for shell in ("/bin/sh", shutil.which("fish")):
            subprocess.run(
                ["ssh", "-F", str(laptop / ".ssh" / "config"), "-o", "BatchMode=yes", "w", "true"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                env=dict(env_with_token(None), SHELL=shell),
            )  # fmt: skip
            assert not marker.exists(), f"the URL ran a command through SHELL={shell}"


def in_a_terminal(argv: list[str], env: dict, timeout: float = 30) -> tuple[int, str]:
    """Run argv with a new pty as its controlling terminal (and stdin, stdout,
    stderr), as `ssh NAME` typed in a terminal is: (exit status, what the
    terminal showed)."""
    become_terminal = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    main, other = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", become_terminal, *argv], stdin=other, stdout=other,
            stderr=other, env=env, start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(other)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(main, 4096)
            except OSError:  # EIO: every process on the terminal has closed it
                break
            if not data:
                break
            shown += data
        return child.wait(timeout=max(1, deadline - time.monotonic())), shown.decode(
            errors="replace"
        )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(main)


def test_the_one_line_reaches_the_terminal_with_connection_sharing(hostile, laptop):
    """OpenSSH sends a ProxyCommand's stderr to /dev/null when ControlPersist is
    set (sshconnect.c), and the block sets it: `ssh NAME` with a stopped server
    showed only "kex_exchange_identification: Connection closed by remote host"
    (docs/users.md promises "`ssh NAME` says so in one line"; --start's progress
    was lost the same way). Fixed: when its stderr is /dev/null, the
    ProxyCommand writes its lines to the terminal (/dev/tty)."""
    assert config_ssh(hostile.url, laptop).returncode == 0
    hostile.answers[("GET", "/sshd/")] = Answer(424, b"")  # the server is stopped
    status, shown = in_a_terminal(
        ["ssh", "-F", str(laptop / ".ssh" / "config"), "-o", "BatchMode=yes", "myhub", "true"],
        env_with_token(None),
    )
    assert status == 255
    assert "jupyter-sshd-proxy: the Jupyter server" in shown, shown


def test_without_a_terminal_a_null_stderr_is_no_failure(hostile):
    """stderr is /dev/null and there is no terminal to write to (VS Code, cron):
    the ProxyCommand still fails as it should, 255, with nothing on stdout."""
    hostile.answers[("GET", "/sshd/")] = Answer(424, b"")
    result = subprocess.run(
        [CLI, "proxy", hostile.url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env_with_token(TOKEN), start_new_session=True,
        timeout=30,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (255, b"")


def test_a_write_that_would_fail_writes_nothing_and_sends_no_key(hostile, laptop):
    """~/.ssh/config is a link whose target's directory is gone (an unmounted
    dotfiles disk): _read() takes it as empty, the key is authorized, known_hosts
    and the token file are written, and only then the config write fails.
    (Same with a target in a read-only directory, e.g. home-manager's link into
    /nix/store, checked by hand as an unprivileged user.) Fixed: before the key
    is sent, each file's real directory must take a new file; the config is
    written last."""
    identity = laptop / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    config = laptop / ".ssh" / "config"
    config.unlink()
    config.symlink_to(laptop / "unmounted" / "config")
    before = snapshot(laptop)
    result = config_ssh(hostile.url, laptop)
    assert result.returncode == 1
    new = sorted(str(path.relative_to(laptop)) for path in set(snapshot(laptop)) - set(before))
    authorized = ("POST", AUTHORIZED_KEYS) in hostile.requests
    assert (new, authorized) == ([], False), f"said {result.stderr!r}"


def test_a_token_the_server_reflects_is_not_printed(hostile, laptop):
    """The client prints the server's message as it is (made printable): a proxy
    or error page that echoes the Authorization header puts the token on the
    terminal, in CI logs, in screenshots. Fixed: printable() shows the token
    read_token() read as <token>."""
    hostile.answers[("POST", AUTHORIZED_KEYS)] = Answer.json(
        {"message": f"rejected Authorization: token {TOKEN}"}, 500
    )
    result = config_ssh(hostile.url, laptop)
    assert result.returncode == 1
    assert TOKEN not in result.stderr, result.stderr


def test_a_password_in_the_url_is_refused_unechoed(hostile, laptop):
    """http://user:password@host/ was accepted: the password was printed in the
    error line (and would go into the Host name and the ProxyCommand). Fixed:
    refused, in a line without it."""
    url = hostile.url.replace("http://", "http://alice:hunter2@")
    result = config_ssh(url, laptop, name=None)
    assert result.returncode == 1
    assert "hunter2" not in result.stderr, result.stderr


def test_a_url_with_a_non_ascii_letter_is_one_line(hostile, laptop):
    """A Hub user name such as jörg pasted as it shows in the address bar:
    http.client could not encode the request line (UnicodeEncodeError).
    Fixed: the path is percent-encoded (UTF-8), as the browser does."""
    good_answers(hostile, "/user/jörg")
    result = config_ssh(hostile.url + "user/jörg/", laptop)
    one_line(result.stderr)


def test_a_dollar_brace_in_a_path_is_refused(hostile):
    """ssh expands ${VAR} in UserKnownHostsFile, IdentityFile and ControlPath, with
    no way to escape it; _config_value() doubled % but left ${...}: the pinned
    keys were looked up in another file than the one config-ssh wrote. Fixed:
    such a path is refused, in one line, and nothing is written."""
    home = Path("/tmp/jsp-${HOME}-attack")
    shutil.rmtree(home, ignore_errors=True)
    (home / ".ssh").mkdir(parents=True)
    try:
        before = snapshot(home)
        result = config_ssh(hostile.url, home)
        assert result.returncode == 1
        one_line(result.stderr)
        assert "'${' in it" in result.stderr
        assert snapshot(home) == before
        assert ("POST", AUTHORIZED_KEYS) not in hostile.requests
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_an_http_to_https_redirect_says_use_https(laptop):
    """http:// URL, server (an ingress) redirects to https: the token has already
    crossed in clear text, and the advice was to install jupyter-sshd-proxy.
    Fixed: "redirected to https://...: use that URL"."""
    seen = []

    def answer(sock, request, stop):
        seen.append(request)
        sock.sendall(
            b"HTTP/1.1 301 Moved\r\nLocation: https://hub.example.org"
            + request.path.encode() + b"\r\nContent-Length: 0\r\n\r\n"
        )  # fmt: skip

    with ScriptedServer(answer) as server:
        result = config_ssh(server.url + "user/alice/", laptop)
    assert [r.header("Authorization") for r in seen] == [f"token {TOKEN}"]  # in clear
    assert result.returncode == 1
    assert "install jupyter-sshd-proxy" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "blob",
    [ED25519 + "==", "AAAAC3NzaC1lZDI1NTE5"],  # excess padding; the type name and no key
    ids=["excess padding", "type name only"],
)
def test_host_key_data_that_ssh_cannot_read_is_not_pinned(blob, hostile, laptop):
    """untrusted.host_keys() checks the type name inside the key data, not the
    key: config-ssh says "host keys pinned" for lines ssh skips as invalid
    (ssh-keygen -l reads none of them). With --host-key-checking accept-new,
    ssh then finds no key for the alias and accepts whatever it is shown.
    Fixed on the server side's keys.parse_key, which now checks the key data."""
    hostile.answers[("GET", HOST_KEYS)] = Answer.json(
        {"keys": [{"type": "ssh-ed25519", "key": blob}]}
    )
    result = config_ssh(hostile.url, laptop)
    known = laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts"
    if result.returncode != 0:
        one_line(result.stderr)
        return
    readable = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(known)], capture_output=True, text=True
    )
    assert readable.returncode == 0, f"pinned {known.read_text()!r}, which ssh cannot read"


# ---------------------------------------------------------------- held


BAD_USERS = [
    "j\u043evyan",  # Cyrillic o
    "jovyan\u200b",  # zero-width space
    "\uff4aovyan",  # fullwidth j
    "jovyan=x",
    'jo"vyan',
    "jo'vyan",
    "jovyan#x",
    "${HOME}",
    "%h",
    "-oProxyCommand=id",
    "a" * 33,
    "jovyan\n",
    "",
]


@pytest.mark.parametrize("user", BAD_USERS, ids=[repr(u)[:20] for u in BAD_USERS])
def test_held_user_names_that_are_not_portable_are_refused(user, hostile, laptop):
    hostile.answers[("GET", STATUS)] = Answer.json({"running": True, "user": user})
    before = snapshot(laptop)
    result = config_ssh(hostile.url, laptop)
    assert result.returncode == 1
    one_line(result.stderr)
    assert snapshot(laptop) == before
    assert ("POST", AUTHORIZED_KEYS) not in hostile.requests


BAD_HOST_KEYS = [
    {"type": "SSH-ED25519", "key": ED25519},
    {"type": "ssh-ed25519 ", "key": ED25519},
    {"type": " ssh-ed25519", "key": ED25519},
    {"type": "ssh-ed25519", "key": ED25519 + " "},
    {"type": "ssh-ed25519", "key": ED25519 + ",evil"},
    {"type": "cert-authority ssh-ed25519", "key": ED25519},
    {"type": "ssh-ed25519\tx", "key": ED25519},
    {"type": "ssh-ed25519", "key": ED25519, "marker": "@revoked"},  # extra field ignored
]


@pytest.mark.parametrize("entry", BAD_HOST_KEYS, ids=[repr(e)[:40] for e in BAD_HOST_KEYS])
def test_held_host_key_entries_are_exactly_type_and_base64(entry, hostile, laptop):
    hostile.answers[("GET", HOST_KEYS)] = Answer.json({"keys": [entry]})
    result = config_ssh(hostile.url, laptop)
    known = laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts"
    if result.returncode == 0:  # only the last one is accepted, as a plain line
        assert known.read_text() == f"myhub ssh-ed25519 {ED25519}\n"
    else:
        one_line(result.stderr)
        assert not known.exists()


@pytest.mark.parametrize(
    "name", ["m\u0443hub", "my hub", "*", "-oProxyCommand=id", "my\nhub", "a%h"]
)
def test_held_bad_names_are_refused(name, hostile, laptop):
    before = snapshot(laptop)
    result = config_ssh(hostile.url, laptop, name=name)
    assert result.returncode == 1
    one_line(result.stderr)
    assert snapshot(laptop) == before


def test_held_a_url_full_of_shell_and_ssh_syntax_survives_sh(laptop):
    """%, ${}, $(), backquotes, quotes and ; in the URL path reach the server
    (percent-encoded, the same path to it) through real ssh, with /bin/sh as the shell."""
    marker = laptop / "PWNED"
    with HostileServer() as server:
        path = f"/u/a%25b%0a%h%%${{HOME}}$(id>{marker})`id>{marker}`'\"\\;!*[x]~/"
        url = server.url.rstrip("/") + path
        good_answers(server, encoded(path).rstrip("/"))
        assert config_ssh(url, laptop, name="w").returncode == 0
        subprocess.run(
            ["ssh", "-F", str(laptop / ".ssh" / "config"), "-o", "BatchMode=yes", "w", "true"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            env=dict(env_with_token(None), SHELL="/bin/sh"),
        )  # fmt: skip
        assert ("GET", encoded(path) + "sshd/") in server.requests
    assert not marker.exists()


def test_held_a_cross_origin_websocket_redirect_through_a_proxy_drops_the_token():
    """With HTTPS_PROXY/http_proxy set, websockets follows redirects itself; to
    another origin it strips Authorization."""
    import socket as socketlib

    stolen = []
    stack: list = []  # upstream sockets, closed at the end

    def evil(sock, request, stop):
        stolen.append(request)
        sock.sendall(b"HTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n")

    def proxy(sock, request, stop):
        host, port = request.path.rsplit(":", 1)
        upstream = socketlib.create_connection((host, int(port)))
        stack.append(upstream)
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(a, b):
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                with_shutdown(b)

        back = threading.Thread(target=pipe, args=(upstream, sock), daemon=True)
        back.start()
        pipe(sock, upstream)
        back.join(5)

    with ScriptedServer(evil) as thief, ScriptedServer(proxy) as forward:

        def hub(sock, request, stop):
            sock.sendall(
                f"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:{thief.port}/steal\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )

        with ScriptedServer(hub) as server:
            env = env_with_token(TOKEN, http_proxy=forward.url, HTTPS_PROXY=forward.url)
            result = subprocess.run(
                [CLI, "proxy", server.url], stdin=subprocess.DEVNULL, capture_output=True,
                text=True, env=env, timeout=30,
            )  # fmt: skip
    for upstream in stack:
        upstream.close()
    assert result.returncode == 255
    assert forward.requests[0].path == f"127.0.0.1:{server.port}"
    assert stolen
    assert all(r.header("Authorization") is None for r in stolen)


def with_shutdown(sock) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(2)


def test_held_a_websocket_handshake_that_never_ends_has_a_deadline():
    def answer(sock, request, stop):
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")
        while not stop.wait(1):
            sock.sendall(b"X-Slow: 1\r\n")

    with ScriptedServer(answer) as server:
        started = time.monotonic()
        result = run_cli("proxy", server.url, token=TOKEN, timeout=40)
        seconds = time.monotonic() - started
    assert result.returncode == 255
    assert result.stderr.endswith("within 10s\n")
    assert seconds < 15


def test_held_a_gzip_answer_is_not_decompressed(hostile, laptop):
    import gzip

    bomb = gzip.compress(b" " * (50 << 20))
    hostile.answers[("GET", STATUS)] = Answer(
        200, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    result = config_ssh(hostile.url, laptop)
    assert result.returncode == 1
    assert "not a JSON object" in result.stderr


def test_held_eight_config_ssh_runs_at_once_all_land(hostile, laptop):
    runs = [
        subprocess.Popen(
            [CLI, "config-ssh", hostile.url, "--name", f"n{i}",
             "--ssh-config", str(laptop / ".ssh" / "config")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env_with_token(TOKEN),
        )
        for i in range(8)
    ]  # fmt: skip
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0] * 8, outputs
    config = (laptop / ".ssh" / "config").read_text()
    known = (laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts").read_text()
    for i in range(8):
        assert f"Host n{i}\n" in config
        assert f"n{i} ssh-ed25519 {ED25519}\n" in known
    assert config.endswith("\n" + EXISTING_CONFIG)  # the blocks on top, the user's text kept


# ------------------------------------- the early path (python -m, EarlySocket)

PYTHON_M = [sys.executable, "-m", "jupyter_sshd_proxy_client"]


def early_proxy(url: str, *more: str, python_m: bool = True):
    """The ProxyCommand as config-ssh writes it (python -m), or its entry point."""
    env = {k: v for k, v in env_with_token(TOKEN).items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [*(PYTHON_M if python_m else [CLI]), "proxy", *more, url], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("python_m", [True, False], ids=["python-m", "entry-point"])
@pytest.mark.parametrize(
    ("names", "host", "trusted", "why"),
    [
        (["localhost"], "127.0.0.1", True, "is not valid for 127.0.0.1 (IP address mismatch"),
        (["other.test"], "localhost", True, "is not valid for localhost (Hostname mismatch"),
        (["127.0.0.1"], "127.0.0.1", False, "cannot verify the certificate of"),
        (None, "127.0.0.1", False, "failed: TLS/SSL connection has been closed (EOF)"),
    ],
    ids=["ip-mismatch", "name-mismatch", "unknown-ca", "plain-http"],
)
def test_held_the_early_path_sends_the_token_only_after_tls_is_verified(
    tmp_path, python_m, names, host, trusted, why
):
    """The upgrade request leaves from a thread while websockets imports; for
    wss:// it is sent only once the certificate is verified for the URL's
    host, as websockets would verify it. What the server decrypts (or, with
    no TLS at all, reads) never holds the token."""
    import socket as socketlib
    import ssl

    from ..support.tls import make_ca

    ca = make_ca(tmp_path, names or ["127.0.0.1"])
    listener = socketlib.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            sock, _ = listener.accept()
            with sock:
                sock.settimeout(10)
                if names is not None:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(ca.cert_file, ca.key_file)
                    with (
                        contextlib.suppress(ssl.SSLError),
                        context.wrap_socket(sock, server_side=True) as tls,
                    ):
                        received.append(tls.recv(65536))
                    return
                received.append(sock.recv(65536))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    more = ["--ca-file", str(ca.ca_file)] if trusted else []
    try:
        result = early_proxy(f"https://{host}:{port}/", *more, python_m=python_m)
        thread.join(10)
    finally:
        listener.close()
    assert result.returncode == 255
    assert result.stderr.startswith("jupyter-sshd-proxy: TLS"), result.stderr
    assert why in result.stderr
    one_line(result.stderr)
    assert not any(TOKEN.encode() in data or b"GET " in data for data in received)


def test_held_a_101_with_the_first_frames_in_the_same_packet():
    banner = b"SSH-2.0-OpenSSH_test\r\n"
    frames = b"\x82" + bytes([len(banner)]) + banner + b"\x88\x02\x03\xe8"

    def answer(sock, request, stop):
        sock.sendall(websocket_accept(request) + frames)

    with ScriptedServer(answer) as server:
        env = {k: v for k, v in env_with_token(TOKEN).items() if not k.endswith("_proxy")}
        result = subprocess.run(
            [*PYTHON_M, "proxy", server.url], stdin=subprocess.DEVNULL, capture_output=True,
            env=env, timeout=30,
        )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, banner, b"")


def test_held_a_refusal_with_escapes_and_our_token_is_printed_clean():
    body = b'{"message": "\\u001b]0;pwned\\u0007\\u001b[2J ' + TOKEN.encode() + b' \\u202eevil"}'

    def answer(sock, request, stop):
        sock.sendall(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )

    with ScriptedServer(answer) as server:
        result = early_proxy(server.url)
    assert result.returncode == 255
    assert result.stderr == (
        f"jupyter-sshd-proxy: the server refused (403) the sshd route at {server.url}sshd/".replace(
            "http://", "ws://"
        )
        + ": ]0;pwned[2J <token> evil\n"
    )
