"""`jupyter-sshd-proxy doctor URL`: check each link from here to sshd, one line each.

    ok    dns        hub.example.org resolves to 203.0.113.7
    ok    tcp        connected to hub.example.org port 443
    ok    tls        certificate valid for hub.example.org
    ok    token      accepted
    ...
A link that fails is FAIL with the reason and the fix; the links after it that
depend on it are skipped. Exit status 0 when every link is ok.

Much of what it prints comes from the server (its version, sshd's banner,
last_error): every line is made printable first, and a missing or odd field
is reported, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import sys
from collections.abc import Callable
from typing import TextIO
from urllib.parse import urlsplit

from . import keyscan, launcher, ssh_files, tls, untrusted
from .errors import CheckFailed, SSHDProxyError
from .keys import grammar
from .proxy_command import MESSAGE_TOO_BIG, open_websocket, read_token, too_big
from .rest import ServerAPI
from .untrusted import printable
from .urls import server_url, websocket_url


class Doctor:
    def __init__(
        self,
        url: str,
        token_file: str | None,
        identity: str | None,
        ssh_config: str | None,
        name: str | None,
        ca_file: str | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self.base = server_url(url)
        self.parts = urlsplit(self.base)
        self.token_file = token_file
        self.identity = identity
        self.ssh_config = ssh_config
        self.name = name or ssh_files.host_name(self.base)
        self.ca_file = ca_file
        self.out = out
        self.token_value = ""
        self._api: ServerAPI | None = None
        self.failed = False

    @property
    def api(self) -> ServerAPI:
        assert self._api is not None, "the token link runs first"
        return self._api

    def say(self, verdict: str, link: str, message: str) -> None:
        self.out.write(f"{verdict:5} {link:9} {printable(message, 2000)}\n")

    def run(self) -> int:
        links: list[tuple[str, Callable[[], str | None]]] = [
            ("dns", self.dns),
            ("tcp", self.tcp),
            ("tls", self.tls),
            ("token", self.token),
            ("server", self.server),
            ("route", self.route),
            ("sshd", self.sshd),
            ("key", self.key),
            ("host key", self.host_key),
        ]
        for link, check in links:
            if self.failed:
                self.say("skip", link, "not checked: an earlier link failed")
                continue
            try:
                message = check()
            except CheckFailed as problem:
                self.failed = True
                self.say("FAIL", link, str(problem))
            except SSHDProxyError as error:
                self.failed = True
                self.say("FAIL", link, str(error))
            else:
                if message is not None:
                    self.say("ok", link, message)
        return 1 if self.failed else 0

    @property
    def port(self) -> int:
        return self.parts.port or (443 if self.parts.scheme == "https" else 80)

    def dns(self) -> str:
        try:
            infos = socket.getaddrinfo(self.parts.hostname, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            msg = f"{self.parts.hostname} does not resolve ({error.strerror}); check the URL"
            raise CheckFailed(msg) from None
        addresses = sorted({str(info[4][0]) for info in infos})
        return f"{self.parts.hostname} resolves to {', '.join(addresses)}"

    def tcp(self) -> str:
        try:
            socket.create_connection((self.parts.hostname, self.port), timeout=5).close()
        except OSError as error:
            msg = (
                f"cannot connect to {self.parts.hostname} port {self.port}: "
                f"{error.strerror or error}; is the Hub up, and is a firewall in the way?"
            )
            raise CheckFailed(msg) from None
        return f"connected to {self.parts.hostname} port {self.port}"

    def tls(self) -> str | None:
        if self.parts.scheme != "https":
            self.say("note", "tls", "plain http: use https for anything but a local server")
            return None
        context = tls.context(self.ca_file) or ssl.create_default_context()
        try:
            raw = socket.create_connection((self.parts.hostname, self.port), timeout=5)
            try:
                context.wrap_socket(raw, server_hostname=self.parts.hostname).close()
            finally:
                raw.close()
        except ssl.SSLError as error:
            raise CheckFailed(tls.explain(error, self.parts.hostname, self.port)) from None
        trusted = f"by {self.ca_file}" if self.ca_file else "by this system"
        return f"certificate valid for {self.parts.hostname}, trusted {trusted}"

    def token(self) -> str:
        self.token_value = read_token(self.token_file)
        self._api = ServerAPI(self.base, self.token_value, ca_file=self.ca_file)
        self.api.get("api/status", "Jupyter API")
        return "accepted"

    def server(self) -> str:
        code, body = self.api.call("GET", "api")
        version = printable(body.get("version"), 100) if isinstance(body, dict) else None
        return f"running (Jupyter Server {version})" if code == 200 else "running"

    def route(self) -> str:
        self.api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
        banner = self._sshd_banner()
        return f"{websocket_url(self.base)} carries SSH ({banner})"

    def _sshd_banner(self) -> str:
        """The first words of sshd, through the same WebSocket ssh would use."""
        from websockets.exceptions import WebSocketException

        url = websocket_url(self.base)
        ws = open_websocket(url, self.token_value, None, open_timeout=10, ca_file=self.ca_file)
        try:
            first = ws.recv(timeout=10)
        except (WebSocketException, TimeoutError, OSError) as error:
            sent = getattr(error, "sent", None)
            if sent is not None and sent.code == MESSAGE_TOO_BIG:
                raise CheckFailed(too_big(url)) from None
            status = self.api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
            reason = status.get("last_error") or "see the Jupyter server's log"
            msg = f"the WebSocket closed before sshd spoke: {reason}"
            raise CheckFailed(msg) from None
        finally:
            ws.close()
        text = first.decode(errors="replace") if isinstance(first, bytes) else first
        return text[:200].strip()

    def sshd(self) -> str:
        status = self.api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
        if status.get("off"):
            raise CheckFailed(printable(status["off"], 300))
        if not status.get("running"):
            msg = f"not running: {status.get('last_error') or 'see the server log'}"
            raise CheckFailed(msg)
        field = status.get
        return (
            f"{field('version')} running as {field('user')} (pid {field('pid')}, "
            f"{field('sessions')} open connections, "
            f"{field('restarts')} restarts)"
        )

    def key(self) -> str:
        identity = self.identity or os.path.join(self._ssh_dir(), "id_ed25519")
        public = identity + ".pub"
        if not os.path.exists(public):
            msg = f"{public} does not exist; run: jupyter-sshd-proxy config-ssh {self.base}"
            raise CheckFailed(msg)
        with open(public) as stream:
            fingerprint = grammar.parse_key(stream.read().strip()).fingerprint
        answer = self.api.get("sshd-proxy/api/authorized-keys", "authorized-keys endpoint")
        listed = untrusted.key_list(answer, self.base, "authorized-keys")
        if fingerprint not in [key.get("fingerprint") for key in listed]:
            msg = (
                f"{public} ({fingerprint}) is not authorized on the server; run: "
                f"jupyter-sshd-proxy config-ssh {self.base}"
            )
            raise CheckFailed(msg)
        return f"{public} ({fingerprint}) is authorized"

    def host_key(self) -> str:
        served = untrusted.host_keys(
            self.api.get("sshd-proxy/api/host-keys", "host-keys endpoint"), self.base
        )
        presented = self._presented(served)
        path = os.path.join(self._ssh_dir(), "jupyter-sshd-proxy", "known_hosts")
        pinned = set()
        if os.path.exists(path):
            with open(path, errors="replace") as stream:
                for line in stream:
                    words = line.split()
                    if len(words) >= 3 and words[0] == self.name:
                        with contextlib.suppress(ValueError):
                            pinned.add(keyscan.fingerprint(words[2]))
        if not pinned:
            msg = (
                f"no host key pinned for {self.name} in {path}; run: "
                f"jupyter-sshd-proxy config-ssh {self.base} --name {self.name}"
            )
            raise CheckFailed(msg)
        if not pinned & set(presented.values()):
            msg = (
                f"the host keys pinned for {self.name} in {path} are not the ones sshd "
                "presents: if the server's host keys were really made anew, run config-ssh again"
            )
            raise CheckFailed(msg)
        shown = ", ".join(f"{kind} {print_}" for kind, print_ in presented.items())
        return f"pinned for {self.name} in {path}; sshd presents {shown}"

    def _presented(self, served: list[tuple[str, str]]) -> dict[str, str]:
        """What sshd presents through the route, for each type the API serves; a
        served key that is not the one sshd presents is a CheckFailed: ssh
        would refuse what config-ssh pinned."""
        argv = [*launcher.python_command(), "proxy"]
        argv += ["--ca-file", self.ca_file] if self.ca_file else []
        argv += ["--token-file", self.token_file] if self.token_file else []
        env = dict(os.environ)
        if not self.token_file:  # the token this run uses, from its environment
            env["JUPYTER_SSHD_PROXY_TOKEN"] = self.token_value
        by_type: dict[str, list[str]] = {}
        for kind, blob in served:
            by_type.setdefault(kind, []).append(keyscan.fingerprint(blob))
        try:
            command = ssh_files._command_line([*argv, self.base])
        except ValueError as error:
            raise CheckFailed(str(error)) from None
        presented = keyscan.presented(list(by_type), command, env)
        for kind, fingerprints in by_type.items():
            if presented[kind] not in fingerprints:
                msg = (
                    f"sshd presents {kind} {presented[kind]}, but the server's host-keys API "
                    f"serves {', '.join(fingerprints)}: ssh refuses what config-ssh pins from "
                    "it; the server's jupyter-sshd-proxy may serve stale .pub files (upgrade "
                    "it), or something else answers on its route"
                )
                raise CheckFailed(msg)
        return presented

    def _ssh_dir(self) -> str:
        from .config_ssh import default_ssh_config

        return os.path.dirname(os.path.abspath(self.ssh_config or default_ssh_config()))


def main_doctor(args: argparse.Namespace) -> int:
    doctor = Doctor(
        args.url, args.token_file, args.identity, args.ssh_config, args.name, args.ca_file
    )
    return doctor.run()
