"""The ssh ProxyCommand: stdin/stdout <-> the server's /sshd/ WebSocket.

ssh starts this on every connection, so it imports only what it needs (never
jupyter_server). stdout carries the SSH bytes: messages go to stderr, one line
each, and never contain the token. With connection sharing (ControlPersist)
ssh sends our stderr to /dev/null; tell_user() then writes to the terminal
(/dev/tty), so that `ssh NAME` still says why it failed.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
import types
from typing import TYPE_CHECKING, Any, TextIO

from . import preconnect, startup
from .errors import ProxyError, ServerNotRunning, SSHDProxyError, TLSError
from .untrusted import SUSPICIOUS, secret
from .urls import websocket_url

if TYPE_CHECKING:  # imported for real by import_websockets(), after the socket is opening
    from collections.abc import Callable

    from websockets.sync.client import ClientConnection

    from .hub_connect import HubTarget

TOKEN_VARIABLES = ("JUPYTER_SSHD_PROXY_TOKEN", "JUPYTERHUB_API_TOKEN", "JUPYTER_TOKEN")
CHUNK = 64 * 1024  # bytes per WebSocket message; far below Tornado's 10 MiB limit
MAX_TOKEN_FILE = 4096  # bytes; a token is tens of characters
# The largest WebSocket message we take. jupyter-server-proxy sends what one
# data_received() of its asyncio transport gives it (at most 256 KiB): a
# message of megabytes is not from our server, and is refused before it is read.
MAX_MESSAGE = 4 * 1024 * 1024
MESSAGE_TOO_BIG = 1009  # the WebSocket close code
_terminal: list[
    TextIO | None
] = []  # [/dev/tty open for writing, or None], once tell_user() has looked


def read_token(token_file: str | None) -> str:
    """The token from a 0600 file of ours or the environment; never from the command line."""
    if token_file:
        token, source = _read_token_file(token_file), f"token file {token_file}"
    else:
        name = next((name for name in TOKEN_VARIABLES if os.environ.get(name, "").strip()), None)
        if name is None:
            msg = f"no token: set {TOKEN_VARIABLES[0]} or give --token-file (a file with mode 600)"
            raise ProxyError(msg)
        token, source = os.environ[name].strip(), f"${name}"
    # It goes into an HTTP header: nothing but visible ASCII (and never printed).
    if not (token.isascii() and token.isprintable() and " " not in token):
        msg = (
            f"{source} does not hold a token: it has spaces, control characters or "
            "non-ASCII letters in it, which a token never has; copy the token again"
        )
        raise ProxyError(msg)
    return secret(token)  # never printed: printable() shows <token>


def _read_token_file(path: str) -> str:
    """The token in path, checked on the open file (fstat), so the file that is
    checked is the file that is read; O_NONBLOCK so that a FIFO cannot hang us."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        msg = f"cannot read token file {path}: {error.strerror}"
        raise ProxyError(msg) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            msg = f"token file {path} is not a regular file; put the token in a file with mode 600"
            raise ProxyError(msg)
        # (Windows keeps owners and permissions in ACLs, which st_mode does not show.)
        if os.name != "nt" and st.st_uid != os.getuid():
            msg = (
                f"token file {path} belongs to uid {st.st_uid}, not to you (uid "
                f"{os.getuid()}); keep your token in a file of your own with mode 600"
            )
            raise ProxyError(msg)
        if os.name != "nt" and stat.S_IMODE(st.st_mode) & 0o077:
            msg = (
                f"token file {path} can be read by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chmod 600 {path}"
            )
            raise ProxyError(msg)
        data = os.read(fd, MAX_TOKEN_FILE)
    finally:
        os.close(fd)
    token = data.decode(errors="replace").strip()
    if not token:
        msg = f"token file {path} is empty"
        raise ProxyError(msg)
    return token


def import_websockets(tls: bool = True) -> types.ModuleType:
    """websockets.sync.client, imported without what the ProxyCommand never uses.

    Without tls (a ws:// URL), ssl (5 ms, most of it OpenSSL's) is a lazy
    module too: websockets.sync.client imports it but uses it only for wss://.

    websockets/version.py imports importlib.metadata (a third of websockets'
    import time, paid on every ssh connection) but uses it only in unreleased
    builds. Let it import a placeholder; if it does need the real module, the
    placeholder fails, and we import everything again the ordinary way.

    websockets/proxy.py imports urllib.request (and with it http.client and
    the email parser: another 10 ms) for the HTTP(S) proxy settings, which it
    reads only when it opens the socket itself; EarlySocket opens it unless a
    proxy is configured. So it gets urllib.request as a lazy module, which is
    imported for real at its first use.
    """
    if "urllib.request" not in sys.modules:
        _lazy_module("urllib.request")
    if not tls and "ssl" not in sys.modules:
        _lazy_module("ssl")
    if "importlib.metadata" in sys.modules:  # already paid for
        from websockets.sync import client

        return client
    sys.modules["importlib.metadata"] = types.ModuleType("importlib.metadata")
    failed = False
    try:
        from websockets.sync import client
    except Exception:
        failed = True
    finally:
        del sys.modules["importlib.metadata"]
    if failed:
        for name in [name for name in sys.modules if name.split(".")[0] == "websockets"]:
            del sys.modules[name]
        from websockets.sync import client
    return client


class _ImportedAtFirstUse(types.ModuleType):
    """A stand-in for a module: the first attribute asked of it imports the real
    module (which takes its place in sys.modules and in its package)."""

    def __getattr__(self, attribute: str) -> object:
        import importlib

        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attribute)


def _lazy_module(name: str) -> None:
    """Put a stand-in for module name into sys.modules (and its package)."""
    parent, _, child = name.rpartition(".")
    if parent:
        __import__(parent)
    sys.modules[name] = stand_in = _ImportedAtFirstUse(name)
    if parent:
        setattr(sys.modules[parent], child, stand_in)  # what `import parent.child` does


def tell_user(line: str) -> None:
    """Write one line where the user sees it: stderr, or the terminal when ssh
    has sent our stderr to /dev/null (it does with ControlPersist). Never fails."""
    if not _terminal:
        _terminal.append(_terminal_if_stderr_is_null())
    stream = _terminal[0] or sys.stderr
    if stream is None:  # no stderr at all: nowhere to say it (never stdout)
        return
    end = "\r\n" if stream is _terminal[0] else "\n"  # ssh may have made the terminal raw
    try:
        stream.write(line + end)
        stream.flush()
    except (OSError, ValueError):
        pass


def _terminal_if_stderr_is_null() -> TextIO | None:
    """/dev/tty, open for writing, if fd 2 is /dev/null and there is a terminal."""
    if os.name == "nt":
        return None
    try:
        err, null = os.fstat(2), os.stat(os.devnull)
        if not (
            stat.S_ISCHR(err.st_mode)
            and (err.st_rdev, err.st_ino, err.st_dev) == (null.st_rdev, null.st_ino, null.st_dev)
        ):
            return None
        return open("/dev/tty", "w", encoding="utf-8", errors="replace")
    except OSError:  # no controlling terminal (VS Code, cron): stay silent, as ssh asked
        return None


SWITCH_INTERVAL = 0.0002  # seconds, while EarlySocket's thread runs


class EarlySocket:
    """Connect and send the upgrade request in a thread while the main thread imports websockets.

    The request is on the wire some 40 ms before websockets could send it, so
    the server's work (authentication, starting sshd) overlaps the import.
    Only the request is ours: websockets reads and validates the response
    (status, Upgrade, Sec-WebSocket-Accept against our key) and does all the
    framing (see early_connection()). With wss://, the thread also does the
    TLS handshake, with the context websockets would be given, verifying the
    host name. The token goes nowhere but into the request.

    Our own socket also stops websockets from following redirects, which we
    never do silently. Not where a proxy is configured (any <scheme>_proxy
    variable, see preconnect.proxy_configured()): websockets connects
    through the proxy then (and follows redirects; a stopped server
    is still recognised by the Hub's final 424).
    """

    def __init__(self, url: str, timeout: float, token: str, ca_file: str | None = None) -> None:
        from urllib.parse import urlsplit

        self.sock: socket.socket | None = None
        self.error: BaseException | None = None
        self.thread = None
        self.key = ""
        self.request = b""
        if preconnect.proxy_configured():
            return
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        self.key, self.request = upgrade_request(url, token)

        def connect() -> None:
            sock = None
            try:
                if secure:  # a bad --ca-file is said before connecting
                    import ssl

                    from . import tls

                    context = tls.context(ca_file) or ssl.create_default_context()
                sock = preconnect.take((host, port))  # (python -m: connected already)
                if sock is None:  # (the host as bytes: no IDNA codec for an ASCII name)
                    name = host.encode("ascii") if host.isascii() else host
                    sock = socket.create_connection((name, port), timeout)  # type: ignore[arg-type]
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                if secure:
                    sock = context.wrap_socket(sock, server_hostname=host)
                sock.sendall(self.request)
                sock.settimeout(None)
                self.sock = sock
            except BaseException as error:  # raised again by result(), in the main thread
                if sock is not None:
                    sock.close()
                self.error = error

        # The main thread imports websockets meanwhile, holding the GIL: by
        # default it would let this thread run (to connect, then to send)
        # only every 5 ms.
        self.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.thread = threading.Thread(target=connect, daemon=True)
        self.thread.start()

    def result(self) -> socket.socket | None:
        """The connected socket with the request sent, None to let websockets
        connect, or the exception (OSError, ssl.SSLError, TLSError)."""
        if self.thread is None:
            return None
        self.thread.join()
        sys.setswitchinterval(self.switch_interval)
        if self.error is not None:
            raise self.error
        return self.sock


def upgrade_request(url: str, token: str) -> tuple[str, bytes]:
    """Our Sec-WebSocket-Key and the upgrade request for url, byte for byte
    what websockets' ClientProtocol.connect() makes with open_websocket()'s
    headers (a test compares them)."""
    import binascii
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if parts.port is not None and parts.port != (443 if secure else 80):
        host = f"{host}:{parts.port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = binascii.b2a_base64(os.urandom(16), newline=False).decode()
    headers = (
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
        ("Authorization", f"token {token}"),
        ("User-Agent", USER_AGENT),
    )
    lines = [f"GET {resource} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return key, ("\r\n".join(lines) + "\r\n\r\n").encode()


USER_AGENT = "jupyter-sshd-proxy"


def early_connection(early: EarlySocket) -> type[ClientConnection] | None:
    """websockets' ClientConnection for a socket whose upgrade request
    EarlySocket has sent: its handshake() sends nothing, takes our key, and
    waits for the response as websockets' own does, which validates it."""
    if early.thread is None:
        return None
    from websockets.client import ClientProtocol
    from websockets.sync.client import ClientConnection

    class EarlyConnection(ClientConnection):
        def __init__(self, sock: socket.socket, protocol: ClientProtocol, **options: Any) -> None:
            # Before the thread that reads the response starts: the key that
            # Sec-WebSocket-Accept must match is the one we sent.
            protocol.key = early.key
            super().__init__(sock, protocol, **options)

        def handshake(
            self,
            additional_headers: object = None,
            user_agent_header: str | None = None,
            timeout: float | None = None,
        ) -> None:
            self.request = self.protocol.connect()  # (for websockets' records; not sent)
            self.request.headers["User-Agent"] = USER_AGENT
            if not self.response_rcvd.wait(timeout):
                msg = "timed out while waiting for handshake response"
                raise TimeoutError(msg)
            if self.protocol.handshake_exc is not None:
                raise self.protocol.handshake_exc

    return EarlyConnection


class _Wrapped:
    """The ssl argument for a socket EarlySocket has already wrapped (websockets
    would wrap it again); its wrap_socket() gives back the socket as it is."""

    @staticmethod
    def wrap_socket(sock: socket.socket, server_hostname: str | None = None) -> socket.socket:
        return sock


def open_websocket(
    url: str,
    token: str,
    ping_interval: float | None,
    open_timeout: float,
    ca_file: str | None = None,
) -> ClientConnection:
    """The open WebSocket to url (ws:// or wss://), or a one-line ProxyError/TLSError."""
    try:
        return _open_websocket(url, token, ping_interval, open_timeout, ca_file)
    finally:
        startup.resume()  # the collector, paused for the start-up's imports


def _open_websocket(
    url: str,
    token: str,
    ping_interval: float | None,
    open_timeout: float,
    ca_file: str | None = None,
) -> ClientConnection:
    secure = url.startswith("wss:")
    early = EarlySocket(url, open_timeout, token, ca_file)
    connect: Callable[..., ClientConnection] = import_websockets(tls=secure).connect
    import ssl  # (the stand-in for ws://: except ssl.SSLError imports it only on an error)

    from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException

    try:
        sock = early.result()
        if sock is None:  # websockets connects (through the proxy)
            from . import tls

            context = tls.context(ca_file) if secure else None
            options: dict[str, Any] = {"ssl": context} if context is not None else {}
            options["additional_headers"] = {"Authorization": f"token {token}"}
        else:
            options = {"create_connection": early_connection(early)}
            if secure:
                options["ssl"] = _Wrapped()
        return connect(
            url,
            sock=sock,
            **options,
            compression=None,  # SSH traffic is encrypted: it does not compress
            max_size=MAX_MESSAGE,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            open_timeout=open_timeout,
            close_timeout=2,  # ssh has gone: do not linger over the goodbye
            user_agent_header=USER_AGENT,
        )
    except SSHDProxyError:
        raise
    except ImportError as error:
        if "python-socks" not in str(error):
            raise
        msg = (
            f"a SOCKS proxy is set for {url} (socks_proxy, or a socks5:// proxy URL), and "
            "connecting through one needs python-socks: install it beside "
            "jupyter-sshd-proxy (pip install python-socks), or unset that proxy"
        )
        raise ProxyError(msg) from None
    except ssl.SSLError as error:  # first: a failed verification is a ValueError too
        from urllib.parse import urlsplit

        from . import tls

        parts = urlsplit(url)
        raise TLSError(tls.explain(error, parts.hostname, parts.port or 443)) from None
    except (WebSocketException, ValueError) as error:
        # With our own socket, websockets refuses to follow a redirect
        # (ValueError, caused by the InvalidStatus): we never follow silently.
        # A Location it cannot parse (https://, a #fragment) is an InvalidURI
        # raised while it handles the InvalidStatus.
        causes = (error, error.__cause__, error.__context__)
        status = next((e for e in causes if isinstance(e, InvalidStatus)), None)
        if status is None:
            if not isinstance(error, WebSocketException):
                raise
            from .untrusted import printable

            what = "handshake" if isinstance(error, InvalidHandshake) else "connection"
            msg = f"WebSocket {what} with {url} failed: {printable(error, 300)}"
            raise ProxyError(msg) from None
        from .rest import explain, server_not_running

        code = status.response.status_code
        location = status.response.headers.get("Location")
        message = explain(
            code, url, "sshd route", refusal_body(status.response.body), location, "sshd/"
        )
        error_class = ServerNotRunning if server_not_running(code, location) else ProxyError
        raise error_class(message, code) from None
    except TimeoutError:
        msg = f"no answer from {url} within {open_timeout:g}s"
        raise ProxyError(msg) from None
    except OSError as error:
        msg = f"cannot connect to {url}: {error.strerror or error}"
        raise ProxyError(msg) from None


def refusal_body(body: bytes | bytearray | None) -> object:
    """The JSON of a refused upgrade (the server says why: SSH is off, no right
    to open a terminal), or None. Untrusted: explain() makes it printable."""
    if not body or len(body) > 64 * 1024:
        return None
    import json  # (only a refusal needs it: not imported on every connection)

    try:
        return json.loads(body)
    except ValueError:
        return None


def pump(ws: ClientConnection, url: str, token: str, ca_file: str | None = None) -> int:
    """Copy stdin to the WebSocket and the WebSocket to stdout until either ends."""
    from websockets.exceptions import ConnectionClosed

    def upstream() -> None:
        try:
            while chunk := os.read(0, CHUNK):
                ws.send(chunk)
        except (OSError, ConnectionClosed):
            pass
        ws.close()

    threading.Thread(target=upstream, daemon=True).start()
    received = 0
    try:
        for message in ws:
            data = message if isinstance(message, bytes) else message.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
            received += len(data)
    except BrokenPipeError:
        pass
    except ConnectionClosed as closed:
        if closed.sent is not None and closed.sent.code == MESSAGE_TOO_BIG:
            raise ProxyError(too_big(url)) from None
    finally:
        ws.close()
    if received == 0:
        # Opened, then closed before sshd said a word: sshd could not start.
        raise ProxyError(why_sshd_did_not_start(url, token, ca_file))
    return 0


def too_big(url: str) -> str:
    return (
        f"{url} sent a WebSocket message of more than {MAX_MESSAGE >> 20} MiB, which "
        f"jupyter-sshd-proxy's server never sends; {SUSPICIOUS}"
    )


def why_sshd_did_not_start(url: str, token: str, ca_file: str | None = None) -> str:
    from .rest import ServerAPI
    from .untrusted import printable

    try:
        api = ServerAPI(url, token, ca_file=ca_file)
        status = api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
        reason = printable(status.get("last_error") or "")
    except SSHDProxyError:
        reason = None
    if reason:
        return f"sshd could not start on the server: {reason}"
    return f"the server at {url} closed the connection at once; see the Jupyter server's log"


def main_proxy(
    url: str,
    token_file: str | None,
    ping_interval: float | None,
    start: bool = False,
    ca_file: str | None = None,
    hub: HubTarget | None = None,
) -> int:
    """Connect, then carry the bytes; a failure is a ProxyError (exit status 255).

    With hub (config-ssh's block for a whole Hub), url is the Hub's and the
    server comes from the host name ssh was given; hub_connect says why a
    server cannot be reached, and starts it where config-ssh was told to."""
    if hub is not None:
        url = hub.url
    ws_url = websocket_url(url)
    token = read_token(token_file)
    try:
        ws = open_websocket(ws_url, token, ping_interval, open_timeout=10, ca_file=ca_file)
    except ServerNotRunning:
        if hub is not None:
            from .hub_connect import why_not_running

            why_not_running(hub, token, tell_user)
        elif not start:
            raise
        else:
            from .hub_start import start_server

            start_server(url, token, tell_user, ca_file)
        ws = open_websocket(ws_url, token, ping_interval, open_timeout=10, ca_file=ca_file)
    except ProxyError as error:
        if hub is None:
            raise
        from .hub_connect import why_failed

        why_failed(hub, token, error, tell_user)  # raises, unless the server now runs
        ws = open_websocket(ws_url, token, ping_interval, open_timeout=10, ca_file=ca_file)
    return pump(ws, ws_url, token, ca_file)
