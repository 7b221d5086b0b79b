"""The page at <base_url>sshd-proxy/ as the browser tests drive it: its paths,
how to open it (token or login form), REST calls as the laptop makes them, an
attacker's site on another port, and a server under a Hub's base URL."""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from playwright.sync_api import expect

from .helpers import JupyterServer

PAGE = "/sshd-proxy/"
API = "/sshd-proxy/api/"
TITLE = "SSH into this server"

expect.set_options(timeout=20_000)


def loaded(page):
    """The page, once its script has filled in everything from the API."""
    page.wait_for_selector("main[data-loaded=true]")
    return page


def open_with_token(context, server, **options):
    page = context(**options).new_page()
    page.goto(f"{server.url}{PAGE}?token={server.token}")
    return loaded(page)


def open_with_cookie_login(context, server, **options):
    """Log in as a person does: the login form, then the page it sends us back to."""
    page = context(**options).new_page()
    page.goto(f"{server.url}{PAGE}")
    prefix = urllib.parse.urlsplit(server.url).path
    expect(page).to_have_url(
        f"{server.url}/login?next={urllib.parse.quote(prefix + PAGE, safe='')}"
    )
    page.get_by_label("Password or token").fill(server.token)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(f"{server.url}{PAGE}")
    return loaded(page)


def api_call(server, method, path, body: bytes | None = None):
    """A REST call with the token, as the laptop client makes it: (status, JSON)."""
    prefix = urllib.parse.urlsplit(server.url).path
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            method, prefix + API + path, body=body,
            headers={"Authorization": f"token {server.token}"},
        )  # fmt: skip
        response = connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)
    finally:
        connection.close()


def key_item(page, fingerprint: str):
    return page.locator(f'#keys li[data-fingerprint="{fingerprint}"]')


def fingerprint(pub: Path) -> str:
    output = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return output.split()[1]


class AttackerPage(BaseHTTPRequestHandler):
    """Serves the attacker's page (server.page) to anyone who asks."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.server.page)

    def log_message(self, *args):
        pass


@dataclass
class PrefixedServer(JupyterServer):
    """A Jupyter server under a base URL, as a Hub spawns it (/user/NAME/)."""

    prefix: str = ""

    def request(self, method: str, path: str, token: str | None = "", headers=None):
        return super().request(method, self.prefix + path, token, headers)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"
