"""How a server fetches the certificate authority's keys (user_ca.fetch_keys)
from an answer it does not trust: a loopback HTTP server made here."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from jupyter_sshd_proxy import user_ca

CA_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBdhWvqQy2gS2D6eZbn7u6XlFkC9V8G2p9Ch3xM8Ue2b"


@pytest.fixture
def served():
    """A server whose /keys answers the keys, and /moved redirects to /keys."""
    body = json.dumps({"keys": [CA_LINE]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":  # a byte every 0.2 s: each read is quick
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for char in body + b" " * 200:
                    try:
                        self.wfile.write(bytes([char]))
                        self.wfile.flush()
                    except OSError:
                        return
                    if stop.wait(0.2):
                        return
                return
            if self.path in ("/moved", "/moved-odd"):
                self.send_response(302)
                odd = "\x1b]0;owned\x07" if self.path == "/moved-odd" else ""
                self.send_header("Location", f"http://127.0.0.1:{port}/keys{odd}")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stop = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_keys_are_fetched(served):
    assert [f"{k.type} {k.blob}" for k in user_ca.fetch_keys(f"{served}/keys")] == [CA_LINE]


def test_a_redirect_is_not_followed(served):
    """The keys decide who logs in: they come from the URL the operator gave,
    never from wherever its answer points (another host, http:// after
    https://, ftp://)."""
    with pytest.raises(user_ca.NotTrusted) as raised:
        user_ca.fetch_keys(f"{served}/moved")
    assert str(raised.value) == (
        f"{served}/moved redirects (302) to {served}/keys; give that URL itself "
        "(c.SSHDProxy.trusted_user_ca_keys): the keys are never fetched from a redirect"
    )


def test_a_redirect_to_a_url_with_control_characters_is_told_without_them(served):
    """The Location header is the answer's: urllib percent-quotes it before the
    line that tells it reaches the Jupyter server's log. (An attack that held.)"""
    with pytest.raises(user_ca.NotTrusted) as raised:
        user_ca.fetch_keys(f"{served}/moved-odd")
    assert str(raised.value) == (
        f"{served}/moved-odd redirects (302) to {served}/keys%1B]0;owned%07; give that URL itself "
        "(c.SSHDProxy.trusted_user_ca_keys): the keys are never fetched from a redirect"
    )


def test_a_trickling_answer_ends_at_the_timeout(served):
    """The timeout is the whole fetch's, not each read's: an answer that sends
    a byte now and then cannot hold sshd's preparation (in the Jupyter
    server's event loop) for minutes."""
    started = time.monotonic()
    with pytest.raises(user_ca.NotTrusted) as raised:
        user_ca.fetch_keys(f"{served}/slow", timeout=1.0)
    assert time.monotonic() - started < 3
    assert str(raised.value) == (
        f"cannot fetch the certificate authority's keys from {served}/slow: "
        "no whole answer within 1s"
    )
