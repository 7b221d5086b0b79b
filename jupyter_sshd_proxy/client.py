"""The ssh ProxyCommand: stdin/stdout <-> the server's /sshd/ WebSocket.

ssh starts this on every connection, so it imports only what it needs (never
jupyter_server). stdout carries the SSH bytes: messages go to stderr, one line
each, and never contain the token.
"""

from __future__ import annotations

import os
import stat
import sys
import threading

from .errors import SSHDProxyError
from .urls import websocket_url

TOKEN_VARIABLES = ("JUPYTER_SSHD_PROXY_TOKEN", "JUPYTERHUB_API_TOKEN", "JUPYTER_TOKEN")
CHUNK = 64 * 1024  # bytes per WebSocket message; far below Tornado's 10 MiB limit


class ProxyError(SSHDProxyError):
    """A failure to tell the user in one line (the exit status is 255, as ssh's)."""


def read_token(token_file: str | None) -> str:
    """The token from a 0600 file or the environment; never from the command line."""
    if token_file:
        try:
            st = os.stat(token_file)
        except OSError as error:
            msg = f"cannot read token file {token_file}: {error.strerror}"
            raise ProxyError(msg) from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            msg = (
                f"token file {token_file} can be read by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chmod 600 {token_file}"
            )
            raise ProxyError(msg)
        with open(token_file) as stream:
            token = stream.read().strip()
        if not token:
            msg = f"token file {token_file} is empty"
            raise ProxyError(msg)
        return token
    for name in TOKEN_VARIABLES:
        if os.environ.get(name):
            return os.environ[name].strip()
    msg = f"no token: set {TOKEN_VARIABLES[0]} or give --token-file (a file with mode 600)"
    raise ProxyError(msg)


def import_websockets():
    """Import the websockets client without importlib.metadata when we can.

    websockets/version.py imports importlib.metadata (a third of websockets'
    import time, paid on every ssh connection) but uses it only in unreleased
    builds. Let it import a placeholder; if it does need the real module, the
    placeholder fails, and we import everything again the ordinary way.
    """
    import types

    placeholder = types.ModuleType("importlib.metadata")
    if "importlib.metadata" in sys.modules:
        placeholder = None
    else:
        sys.modules["importlib.metadata"] = placeholder
    try:
        from websockets.sync import client
    except Exception:
        if placeholder is None:
            raise
        for name in [name for name in sys.modules if name.split(".")[0] == "websockets"]:
            del sys.modules[name]
        del sys.modules["importlib.metadata"]
        placeholder = None
        from websockets.sync import client
    finally:
        if placeholder is not None and sys.modules.get("importlib.metadata") is placeholder:
            del sys.modules["importlib.metadata"]
    return client


def pump(url: str, token: str, ping_interval: float | None, open_timeout: float = 10) -> int:
    """Copy stdin to the WebSocket and the WebSocket to stdout until either ends."""
    connect = import_websockets().connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    try:
        ws = connect(
            url,
            additional_headers={"Authorization": f"token {token}"},
            compression=None,  # SSH traffic is encrypted: it does not compress
            max_size=None,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            open_timeout=open_timeout,
            close_timeout=2,  # ssh has gone: do not linger over the goodbye
            user_agent_header="jupyter-sshd-proxy",
        )
    except InvalidStatus as error:
        from .api import explain

        raise ProxyError(explain(error.response.status_code, url, "sshd route")) from None
    except InvalidHandshake as error:
        msg = f"WebSocket handshake with {url} failed: {error}"
        raise ProxyError(msg) from None
    except TimeoutError:
        msg = f"no answer from {url} within {open_timeout:g}s"
        raise ProxyError(msg) from None
    except OSError as error:
        msg = f"cannot connect to {url}: {error.strerror or error}"
        raise ProxyError(msg) from None

    def upstream():
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
    except (BrokenPipeError, ConnectionClosed):
        pass
    finally:
        ws.close()
    if received == 0:
        # Opened, then closed before sshd said a word: sshd could not start.
        raise ProxyError(why_sshd_did_not_start(url, token))
    return 0


def why_sshd_did_not_start(url: str, token: str) -> str:
    from .api import ServerAPI

    try:
        status = ServerAPI(url, token).get("sshd-proxy/api/status", "sshd-proxy status endpoint")
        reason = status.get("last_error")
    except SSHDProxyError:
        reason = None
    if reason:
        return f"sshd could not start on the server: {reason}"
    return f"the server at {url} closed the connection at once; see the Jupyter server's log"


def main_proxy(url: str, token_file: str | None, ping_interval: float | None) -> int:
    try:
        ws_url = websocket_url(url)
        token = read_token(token_file)
        return pump(ws_url, token, ping_interval)
    except SSHDProxyError as error:
        print(f"jupyter-sshd-proxy: {error}", file=sys.stderr)
        return 255
