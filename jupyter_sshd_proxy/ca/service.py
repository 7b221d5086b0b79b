"""The certificate authority's web service, as JupyterHub runs it.

    POST <prefix>sign   {"public_key": "ssh-ed25519 AAAA...", "validity_seconds": 3600}
                        with "Authorization: token <the user's Hub token>"
                        -> {"certificate": "ssh-ed25519-cert-v01@openssh.com ...", ...}
    GET  <prefix>keys   the public keys servers trust (no token: they are not secret)

Requests are authenticated with JupyterHub's service authentication
(HubAuth): the token's owner is the Hub user the certificate names, and the
token must carry access:services!service=<this service>. A token of a
service, or a body that names another user, is refused. Errors are JSON
{"message": "..."} in one line. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_events import EventLogger
from jupyterhub.services.auth import HubAuth
from tornado import web

from jupyter_sshd_proxy_client.keys.grammar import PublicKey

from . import signing, state

log = logging.getLogger("jupyter_sshd_proxy.ca")
SCHEMA = "https://schema.jupyter.org/jupyter_sshd_proxy/certificate/v1"
SCHEMA_FILE = Path(__file__).parent.parent / "event_schemas" / "certificate.yaml"


@dataclass
class Authority:
    ssh_keygen: str
    state_dir: str
    ca_key: str
    signing_key: PublicKey
    trusted: list[PublicKey] = field(default_factory=list)  # keys rotated in or out
    default_validity: int = signing.DEFAULT_VALIDITY
    max_validity: int = signing.MAX_VALIDITY
    events: EventLogger | None = None

    def public_keys(self) -> list[PublicKey]:
        keys = [self.signing_key, *self.trusted]
        return list({key.blob: key for key in keys}.values())

    def sign(self, hub_user: str, key: PublicKey, seconds: int) -> dict[str, Any]:
        """Certify key for hub_user (blocking: ssh-keygen runs)."""
        principal = signing.principal_for(hub_user)
        work = tempfile.mkdtemp(prefix="sign-", dir=self.state_dir)
        try:
            path = os.path.join(work, "key.pub")
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(f"{key.type} {key.blob}\n")
            checked = signing.fingerprint(self.ssh_keygen, path)
            if checked.fingerprint != key.fingerprint:
                msg = "public_key refused: ssh-keygen reads another key than the line holds"
                raise signing.SigningError(msg)
            if checked.type == "RSA" and checked.bits < signing.RSA_MIN_BITS:
                msg = (
                    f"public_key refused: a {checked.bits}-bit RSA key is too weak to certify "
                    f"({signing.RSA_MIN_BITS} bits at least); use an ed25519 key"
                )
                raise signing.SigningError(msg)
            serial = state.next_serial(self.state_dir)
            now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
            argv = signing.sign_argv(
                self.ssh_keygen, self.ca_key, hub_user, key, seconds, serial, path
            )
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=60, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if result.returncode != 0:
                log.error("ssh-ca: ssh-keygen could not sign: %s", result.stderr.strip())
                msg = "the authority could not sign (its log says why)"
                raise signing.SigningError(msg, 500)
            with open(os.path.join(work, "key-cert.pub"), encoding="utf-8") as stream:
                certificate = stream.read().strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        after = now - datetime.timedelta(seconds=signing.BACKDATE)
        before = now + datetime.timedelta(seconds=seconds)
        issued = {
            "hub_user": hub_user,
            "principal": principal,
            "key_type": key.type,
            "key_fingerprint": key.fingerprint,
            "serial": serial,
            "valid_after": after.isoformat().replace("+00:00", "Z"),
            "valid_before": before.isoformat().replace("+00:00", "Z"),
            "ca_fingerprint": self.signing_key.fingerprint,
        }
        log.info(
            "ssh-ca: certificate %d for %s (%s %s), valid until %s",
            serial, hub_user, key.type, key.fingerprint, issued["valid_before"],
        )  # fmt: skip
        if self.events is not None:
            try:
                self.events.emit(schema_id=SCHEMA, data=issued)
            except Exception as error:  # the certificate is issued: say so, go on
                log.error("ssh-ca: could not send the audit event: %s", error)
        return {"certificate": certificate, **issued}


class BaseHandler(web.RequestHandler):
    def initialize(self, authority: Authority, hub_auth: HubAuth | None = None) -> None:
        self.authority = authority
        self.hub_auth = hub_auth

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """tornado's, without the query string, where a client may have put its
        token (tornado logs request.uri), and with the message as an argument,
        never as a format."""
        request = self.request
        if isinstance(value, web.HTTPError):
            if value.log_message:
                log.warning(
                    "ssh-ca: %d %s %s: %s", value.status_code, request.method, request.path,
                    value.log_message,
                )  # fmt: skip
            return
        log.error(
            "ssh-ca: uncaught error in %s %s", request.method, request.path,
            exc_info=(typ, value, tb),
        )  # fmt: skip

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        message = error.log_message if isinstance(error, web.HTTPError) else None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message or self._reason}))

    def answer(self, body: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


class KeysHandler(BaseHandler):
    def get(self) -> None:
        self.answer(
            {
                "keys": [f"{key.type} {key.blob}" for key in self.authority.public_keys()],
                "principal_prefix": signing.PRINCIPAL_PREFIX,
                "max_validity_seconds": self.authority.max_validity,
                "default_validity_seconds": self.authority.default_validity,
            }
        )


class SignHandler(BaseHandler):
    async def post(self) -> None:
        assert self.hub_auth is not None
        token = self.hub_auth.get_token(self, in_cookie=False)
        if not token:
            raise web.HTTPError(
                401, "no token: send your Hub token in the Authorization header (token <token>)"
            )
        # Asked each time, never from HubAuth's cache (5 minutes): a revoked
        # token, or a user removed from the Hub, gets no certificate at once.
        model = await self.hub_auth.user_for_token(token, use_cache=False, sync=False)
        if not model:
            raise web.HTTPError(401, "the Hub does not know this token (expired or revoked?)")
        if model.get("kind", "user") != "user":
            raise web.HTTPError(403, "only a Hub user's token can have a user certificate")
        scopes = self.hub_auth.access_scopes
        if not scopes:  # fail closed: __main__ refuses to start so
            raise web.HTTPError(500, "the authority has no access scope to check tokens against")
        if not self.hub_auth.check_scopes(scopes, model):
            needed = next((s for s in sorted(scopes) if "!service=" in s), min(scopes))
            raise web.HTTPError(403, f"the token lacks the scope {needed}")
        hub_user = model["name"]
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'send JSON: {"public_key": "ssh-ed25519 AAAA..."}')
        for name in ("user", "principal"):
            asked = body.get(name)
            expected = hub_user if name == "user" else signing.PRINCIPAL_PREFIX + hub_user
            if asked is not None and asked != expected:
                raise web.HTTPError(
                    403,
                    f"this token is {hub_user}'s: it can only have a certificate for {expected}",
                )
        unknown = set(body) - {"public_key", "validity_seconds", "user", "principal"}
        try:
            if unknown:
                msg = f"unknown fields {sorted(unknown)}; send public_key and validity_seconds"
                raise signing.SigningError(msg)
            key = signing.public_key(body.get("public_key"))
            seconds = signing.validity(
                body.get("validity_seconds"),
                self.authority.default_validity,
                self.authority.max_validity,
            )
            issued = await asyncio.get_running_loop().run_in_executor(
                None, self.authority.sign, hub_user, key, seconds
            )
        except signing.SigningError as error:
            raise web.HTTPError(error.status, str(error)) from None
        self.answer(issued)


def make_app(authority: Authority, hub_auth: HubAuth, prefix: str) -> web.Application:
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    options = {"authority": authority, "hub_auth": hub_auth}
    return web.Application(
        [
            (prefix + "sign", SignHandler, options),
            (prefix + "keys", KeysHandler, options),
            (prefix.rstrip("/") or "/", KeysHandler, options),
            (prefix, KeysHandler, options),
        ],
        log_function=_log_request,
    )


def _log_request(handler: web.RequestHandler) -> None:
    """One access line, without query or headers (never a token)."""
    request = handler.request
    log.info(
        "ssh-ca: %d %s %s %.1fms", handler.get_status(), request.method, request.path,
        1000 * request.request_time(),
    )  # fmt: skip


def event_logger(events_file: str | None) -> EventLogger | None:
    if not events_file:
        return None
    events = EventLogger(handlers=[logging.FileHandler(events_file)])
    events.register_event_schema(SCHEMA_FILE)
    return events
