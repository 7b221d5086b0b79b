"""The ProxyCommand sends its upgrade request while websockets is still being imported.

The server's work (authentication, starting sshd) then overlaps the
client's longest start-up step. websockets still reads and validates the
answer: the request is ours, the WebSocket is websockets'.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.sync.server import serve
from websockets.uri import parse_uri

from jupyter_sshd_proxy_client import proxy_command

from ..support.helpers import VENV_BIN

TOKEN = "early-upgrade-token-0123456789abcdef"

# Runs the ProxyCommand with websockets' import held until the server has seen
# the upgrade request; if it has not within 5 s, websockets cannot be imported.
HELD_IMPORT = """
import os, runpy, sys, time

RELEASED = sys.argv[1]

class HoldWebsockets:
    def find_spec(self, name, path=None, target=None):
        if name == "websockets":
            deadline = time.monotonic() + 5
            while not os.path.exists(RELEASED):
                if time.monotonic() > deadline:
                    raise ImportError("no upgrade request before websockets")
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, HoldWebsockets())
sys.argv = ["jupyter-sshd-proxy", *sys.argv[2:]]
runpy.run_module("jupyter_sshd_proxy_client", run_name="__main__")
"""


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8888/user/alice/sshd/",
        "ws://[::1]:8888/sshd/",
        "wss://hub.example.org/user/j%C3%B6rg/sshd/",
        "wss://hub.example.org:8443/user/a/sshd/",
        "ws://localhost/sshd/",
    ],
)
def test_our_upgrade_request_is_the_one_websockets_would_send(url):
    key, request = proxy_command.upgrade_request(url, TOKEN)
    protocol = ClientProtocol(parse_uri(url))
    protocol.key = key
    expected = protocol.connect()
    expected.headers.update({"Authorization": f"token {TOKEN}"})
    expected.headers.setdefault("User-Agent", proxy_command.USER_AGENT)
    assert request == expected.serialize()
    assert len(key) == 24
    assert key != proxy_command.upgrade_request(url, TOKEN)[0]


def test_the_request_is_on_the_wire_before_websockets_is_imported(tmp_path):
    released = tmp_path / "websockets-may-import"
    seen: list[tuple[bool, str | None]] = []

    def process_request(connection, request):
        # Recorded before the flag lets the client import websockets.
        seen.append((released.exists(), request.headers.get("Authorization")))
        released.touch()

    def handler(connection):
        connection.send(b"SSH-2.0-OpenSSH_test\r\n")
        connection.recv(timeout=10)  # until the client closes

    with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
        result = subprocess.run(
            [str(VENV_BIN / "python"), "-c", HELD_IMPORT, str(released), "proxy",
             f"http://127.0.0.1:{port}/"],
            input=b"", capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        server.shutdown()
    assert seen == [(False, f"token {TOKEN}")], result.stderr
    assert result.stdout == b"SSH-2.0-OpenSSH_test\r\n", result.stderr
    assert result.returncode == 0, result.stderr


def test_websockets_still_checks_the_answer_to_our_request(tmp_path):
    """A 101 whose Sec-WebSocket-Accept is not for our key is refused, by websockets."""

    def process_response(connection, request, response):
        del response.headers["Sec-WebSocket-Accept"]
        response.headers["Sec-WebSocket-Accept"] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        return response

    with serve(lambda c: None, "127.0.0.1", 0, process_response=process_response) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
        result = subprocess.run(
            [str(VENV_BIN / "jupyter-sshd-proxy"), "proxy", f"http://127.0.0.1:{port}/"],
            input=b"", capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        server.shutdown()
    assert result.returncode == 255
    assert result.stderr.decode() == (
        f"jupyter-sshd-proxy: WebSocket handshake with ws://127.0.0.1:{port}/sshd/ failed: "
        "invalid Sec-WebSocket-Accept header: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n"
    )
    assert TOKEN not in result.stderr.decode()


# Runs `python -m jupyter_sshd_proxy_client` with the command line module
# (the ProxyCommand's code) held until the server has seen a TCP
# connection. Held in exec_module, not find_spec: other threads can import.
HELD_CLI = """
import importlib.machinery, os, runpy, sys, time

RELEASED = sys.argv[1]

class HoldCLI:
    def find_spec(self, name, path=None, target=None):
        if name != "jupyter_sshd_proxy_client.cli":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        execute = spec.loader.exec_module

        def held(module):
            deadline = time.monotonic() + 5
            while not os.path.exists(RELEASED):
                if time.monotonic() > deadline:
                    raise ImportError("no connection before the command line")
                time.sleep(0.01)
            execute(module)

        spec.loader.exec_module = held
        return spec

sys.meta_path.insert(0, HoldCLI())
sys.argv = ["jupyter-sshd-proxy", *sys.argv[2:]]
runpy.run_module("jupyter_sshd_proxy_client", run_name="__main__", alter_sys=True)
"""


def test_python_m_connects_before_the_command_line_is_parsed_and_uses_that_socket(tmp_path):
    """`python -m jupyter_sshd_proxy_client proxy URL` (config-ssh's ProxyCommand)
    connects before importing the command line; EarlySocket then sends on that
    socket: one TCP connection, not two. A relay in front of a websockets
    server sees the connections."""
    released = tmp_path / "cli-may-import"
    accepted: list[bool] = []
    opened: list[socket.socket] = []

    def handler(connection):
        connection.send(b"SSH-2.0-OpenSSH_test\r\n")
        connection.recv(timeout=10)

    def copy(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    with serve(handler, "127.0.0.1", 0) as server, socket.create_server(("127.0.0.1", 0)) as relay:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        backend = server.socket.getsockname()

        def accept() -> None:
            while True:
                try:
                    client, _ = relay.accept()
                except OSError:  # closed at the end of the test
                    return
                accepted.append(released.exists())
                released.touch()
                upstream = socket.create_connection(backend)
                opened.extend([client, upstream])
                threading.Thread(target=copy, args=(client, upstream), daemon=True).start()
                threading.Thread(target=copy, args=(upstream, client), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        port = relay.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
        result = subprocess.run(
            [str(VENV_BIN / "python"), "-c", HELD_CLI, str(released), "proxy",
             f"http://127.0.0.1:{port}/"],
            input=b"", capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        server.shutdown()
    for sock in opened:  # else a copy thread drops them unclosed up to 10 s later,
        with contextlib.suppress(OSError):  # and a later test fails on the warning
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    assert accepted == [False], result.stderr
    assert result.stdout == b"SSH-2.0-OpenSSH_test\r\n", result.stderr
    assert result.returncode == 0, result.stderr


class Listener:
    """A loopback listener that records the first line of each connection and
    answers 403: the server (it must see nothing) or the proxy."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:  # closed at the end of the test
                return
            with client, contextlib.suppress(OSError):
                client.settimeout(10)
                self.lines.append(client.recv(65536).split(b"\r\n", 1)[0])
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.mark.parametrize("variable", ["ws_proxy", "WS_PROXY", "https_proxy"])
@pytest.mark.parametrize("python_m", [True, False], ids=["python-m", "entry-point"])
def test_every_proxy_variable_websockets_reads_keeps_us_off_the_direct_path(variable, python_m):
    """websockets takes its proxy from urllib.request: every <scheme>_proxy
    variable (ws_proxy, wss_proxy, socks_proxy...). The early paths looked at
    https/http/all_proxy only: with ws_proxy set, they connected straight to
    the server, token and all, past the proxy the user had set."""
    server, proxy = Listener(), Listener()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({"JUPYTER_SSHD_PROXY_TOKEN": TOKEN, variable: f"http://127.0.0.1:{proxy.port}"})
    command = (
        [str(VENV_BIN / "python"), "-m", "jupyter_sshd_proxy_client"]
        if python_m
        else [str(VENV_BIN / "jupyter-sshd-proxy")]
    )
    try:
        result = subprocess.run(
            [*command, "proxy", f"http://127.0.0.1:{server.port}/"],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
    finally:
        server.close()
        proxy.close()
    assert server.lines == []
    assert proxy.lines == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1".encode()]
    assert result.returncode == 255
    assert result.stderr.decode() == (
        f"jupyter-sshd-proxy: WebSocket handshake with ws://127.0.0.1:{server.port}/sshd/ "
        "failed: proxy rejected connection: HTTP 403\n"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8888/user/a/", "https://HUB.example.org:443/", "http://[::1]:8888/",
        "https://hub.example.org./", "http://hub:00080/", "wss://h/", "http://h:65535/",
        "HTTP://h/", "http://127.0.0.1:0/", "ftp://h:21/", "gopher://h:25/", "http://%68ub/",
        "http://Bücher.Example/u/", "http://h\u3002example/", "http://[::1%25eth0]:80/",
        "http://h:65536/", "http://h: 80/", "http://u@h/", "http:///x",
    ],
)  # fmt: skip
def test_the_early_connection_goes_only_where_the_command_line_will(url):
    """python -m's early parse of the URL, against the command line's: it
    connected to port 80 for a URL with port 0, to ftp://h:21/ (both refused
    by the command line), and to a host with other letters under a spelling
    EarlySocket never asks for (the socket then stayed open, unused)."""
    from urllib.parse import urlsplit

    from jupyter_sshd_proxy_client import preconnect
    from jupyter_sshd_proxy_client.errors import BadURLError
    from jupyter_sshd_proxy_client.urls import websocket_url

    try:
        parts = urlsplit(websocket_url(url))
        wanted = (parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80))
    except BadURLError:
        wanted = None
    assert preconnect._address(url) in (None, wanted)


def test_a_url_the_command_line_refuses_is_never_connected_to():
    server = Listener()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
    url = f"ftp://127.0.0.1:{server.port}/"
    try:
        result = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "jupyter_sshd_proxy_client", "proxy", url],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
    finally:
        server.close()
    assert result.returncode == 255
    assert result.stderr.decode().startswith(f"jupyter-sshd-proxy: '{url}' is not a server URL")
    assert server.lines == []


def test_a_socks_proxy_without_python_socks_is_one_line_naming_the_fix():
    """Set, a SOCKS proxy is honoured (no early connection past it): where
    python-socks is missing, websockets' ImportError was called a bug in
    jupyter-sshd-proxy; it is the user's setting, and one line says so."""
    import importlib.util

    if importlib.util.find_spec("python_socks") is not None:
        pytest.skip("python-socks is installed here")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({"JUPYTER_SSHD_PROXY_TOKEN": TOKEN, "socks_proxy": "socks5h://127.0.0.1:1"})
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "jupyter_sshd_proxy_client", "proxy",
         "http://127.0.0.1:1/"],
        stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 255
    assert result.stderr.decode() == (
        "jupyter-sshd-proxy: a SOCKS proxy is set for ws://127.0.0.1:1/sshd/ (socks_proxy, "
        "or a socks5:// proxy URL), and connecting through one needs python-socks: install "
        "it beside jupyter-sshd-proxy (pip install python-socks), or unset that proxy\n"
    )


# Runs `python -m jupyter_sshd_proxy_client` with the modules named in argv[1]
# refused: the ProxyCommand fails if it imports one of them.
REFUSED_IMPORTS = """
import runpy, sys

REFUSED = set(sys.argv[1].split(","))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name in REFUSED:
            raise ImportError(f"{name} was imported")
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["jupyter-sshd-proxy", *sys.argv[2:]]
runpy.run_module("jupyter_sshd_proxy_client", run_name="__main__", alter_sys=True)
"""


def run_refusing(refused: list[str], args: list[str]) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
    return subprocess.run(
        [str(VENV_BIN / "python"), "-c", REFUSED_IMPORTS, ",".join(refused), *args],
        input=b"", capture_output=True, env=env, timeout=30, check=False,
    )  # fmt: skip


def banner_server() -> contextlib.AbstractContextManager[Any]:
    def handler(connection):
        connection.send(b"SSH-2.0-OpenSSH_test\r\n")
        connection.recv(timeout=10)  # until the client closes

    return serve(handler, "127.0.0.1", 0)


def test_an_ascii_host_name_needs_no_idna_codec():
    """The IDNA codec (encodings.idna, stringprep, unicodedata: a millisecond
    or two) was imported on every connection, for a host name that is ASCII."""
    with banner_server() as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        result = run_refusing(["encodings.idna"], ["proxy", f"http://localhost:{port}/"])
        server.shutdown()
    assert result.stdout == b"SSH-2.0-OpenSSH_test\r\n", result.stderr
    assert result.returncode == 0, result.stderr


def test_an_empty_label_in_the_host_is_one_line_not_a_traceback():
    """python -m's early connection took a..b to the IDNA codec, whose
    UnicodeError ended its thread with a traceback on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
    for url in ["http://a..b/", f"http://{'a' * 64}.example/"]:
        result = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "jupyter_sshd_proxy_client", "proxy", url],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 255
        stderr = result.stderr.decode()
        assert stderr.startswith(f"jupyter-sshd-proxy: '{url}' is not a server URL"), stderr
        assert stderr.count("\n") == 1, stderr


CONFIG_SSH_LINES = [
    ["--token-file", "/home/a/.ssh/jupyter-sshd-proxy/t", "https://h.example/user/a/"],
    ["--ca-file", "/c a.pem", "--token-file", "/t", "https://h.example:8443/user/j%C3%B6rg/"],
    ["--token-file", "/t", "--user", "alice", "--name", "hub", "https://h.example/", "hub.gpu"],
    ["--token-file", "/t", "--ca-file", "/c", "--user", "a", "--name", "n", "--start",
     "https://h.example/", "n"],
]  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        *CONFIG_SSH_LINES,
        ["http://127.0.0.1:8888/"], ["u"], [""], ["--token-file", "", "u"],
        ["--ping-interval", "0", "u"], ["--ping-interval", " 1e3 ", "u"],
        ["--ping-interval", "inf", "u"], ["--user", "a", "--user", "b", "u"],
        ["--start", "--start", "u", "h"], ["u", "--start"], ["--start", "u", "--user", "a"],
        ["u", "h", "x"], [], ["--token-file"], ["--token-file", "-t", "u"],
        ["--ping-interval", "-1", "u"], ["--ping-interval", "often", "u"],
        ["--token-file=/t", "u"], ["--token", "/t", "u"], ["-h"], ["u", "--help"],
        ["--", "u"], ["-", "u"], ["--user", "a b", "u"], ["u", "-x y"], ["--verbose", "u"],
    ],
)  # fmt: skip
def test_the_early_parse_takes_what_the_command_line_takes_or_nothing(args):
    """preconnect.parse() spares config-ssh's ProxyCommand argparse: for what
    it takes, the command line's parser gives the same, and what it leaves
    (None) goes to that parser, which says what is wrong as always."""
    from jupyter_sshd_proxy_client import preconnect
    from jupyter_sshd_proxy_client.cli import build_parser

    parsed = preconnect.parse(args)
    if args in CONFIG_SSH_LINES:
        assert parsed is not None
    if parsed is not None:
        assert {"command": "proxy", **parsed} == vars(build_parser().parse_args(["proxy", *args]))


def test_the_early_parse_knows_every_option_of_the_proxy_command():
    """An option added to the command line's proxy command and not to
    preconnect.parse() would send config-ssh's lines back to argparse."""
    from jupyter_sshd_proxy_client import preconnect
    from jupyter_sshd_proxy_client.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    proxy = commands["proxy"]
    options = {o for action in proxy._actions for o in action.option_strings} - {"-h", "--help"}
    takes_value = {
        o for action in proxy._actions if action.nargs != 0 for o in action.option_strings
    }
    assert takes_value == preconnect.WITH_VALUE
    assert options - takes_value == preconnect.FLAGS
    defaults = {action.dest: action.default for action in proxy._actions if action.dest != "help"}
    assert defaults == preconnect.DEFAULTS


def test_config_ssh_s_proxy_command_does_without_argparse():
    """Importing argparse and building every command's parser (its help
    formatter imports shutil, bz2 and lzma) was some 5 ms of every start."""
    with banner_server() as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        result = run_refusing(["argparse"], ["proxy", f"http://127.0.0.1:{port}/"])
        server.shutdown()
    assert result.stdout == b"SSH-2.0-OpenSSH_test\r\n", result.stderr
    assert result.returncode == 0, result.stderr


# Runs `python -m jupyter_sshd_proxy_client` and writes to argv[1] whether the
# garbage collector ran while websockets was being imported, and at the end.
GC_WATCH = """
import gc, json, runpy, sys

OUT = sys.argv[1]
seen = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "websockets":
            seen["importing websockets"] = gc.isenabled()
        return None

sys.meta_path.insert(0, Watch())
sys.argv = ["jupyter-sshd-proxy", *sys.argv[2:]]
try:
    runpy.run_module("jupyter_sshd_proxy_client", run_name="__main__", alter_sys=True)
finally:
    seen["at the end"] = gc.isenabled()
    seen["frozen"] = gc.get_freeze_count() > 0
    with open(OUT, "w") as out:
        json.dump(seen, out)
"""


def test_no_garbage_collection_until_the_websocket_is_open(tmp_path):
    """The start-up's imports make tens of thousands of objects, all kept;
    the collector walked them again and again (some 2 ms of the start). It
    is off until the WebSocket is open, then on again for the session, with
    the start-up's objects frozen out of its way."""
    import json

    watched = tmp_path / "gc.json"
    with banner_server() as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["JUPYTER_SSHD_PROXY_TOKEN"] = TOKEN
        result = subprocess.run(
            [str(VENV_BIN / "python"), "-c", GC_WATCH, str(watched), "proxy",
             f"http://127.0.0.1:{port}/"],
            input=b"", capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        server.shutdown()
    assert result.stdout == b"SSH-2.0-OpenSSH_test\r\n", result.stderr
    assert json.loads(watched.read_text()) == {
        "importing websockets": False,
        "at the end": True,
        "frozen": True,
    }


def test_open_websocket_leaves_the_collector_as_its_caller_had_it(monkeypatch):
    """Only the ProxyCommand's pause is undone: open_websocket() called by
    a program of its own with the collector on (or off) leaves it so."""
    import gc

    from jupyter_sshd_proxy_client import startup
    from jupyter_sshd_proxy_client.errors import ProxyError

    monkeypatch.setattr(startup, "_paused", [])
    enabled = gc.isenabled()
    try:
        for state in (gc.enable, gc.disable):
            state()
            with pytest.raises(ProxyError):
                proxy_command.open_websocket("ws://127.0.0.1:1/sshd/", TOKEN, None, 5)
            assert gc.isenabled() == (state is gc.enable)
    finally:
        (gc.enable if enabled else gc.disable)()
