"""The Hub's own REST API, as the laptop uses it: who the token belongs to, which
servers that user has, and a new token that can do no more than ssh needs.

    GET  hub/api/user?include_stopped_servers=1   the token's user, scopes and servers
    POST hub/api/users/NAME/tokens                 a token with fewer scopes that expires
    DELETE hub/api/users/NAME/tokens/ID            take a token back

The Hub is not trusted any more than a server is (see untrusted.py): a user
name, a server name, a scope or a date it sends is checked against a strict
pattern before it reaches a file, a command line or the terminal. A user
name that fails is refused (HubError: nothing is written); a server whose
name cannot be an ssh host name safely is left out, and named in one line.

Only the standard library (through rest.py): `ssh NAME` runs parts of this
on every connection that fails, so its import must stay cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import BadURLError, HubError, UntrustedAnswer
from .rest import ServerAPI, explain
from .untrusted import SUSPICIOUS, secret, shown
from .urls import server_url

# JupyterHub's user names: letters, digits and what e-mail addresses and
# LDAP names bring ('.', '_', '@', '+', '-'), not starting with a punctuation
# mark. Nothing a shell, ssh_config or a URL path reads as more than a name.
HUB_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
HUB_USER_RULE = "letters, digits, '.', '_', '@', '+' and '-', at most 128 characters"
# A server name becomes the last label of NAME.SERVER: a host name label
# without a dot (the dot separates it from NAME), starting with a letter or
# digit. JupyterHub 6 allows only lower-case letters, digits and '-' (1-30).
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
SERVER_NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit, at most 63"
# A scope as JupyterHub writes them: access:servers!user=alice, read:users:name, ...
SCOPE = re.compile(r"[a-z][a-z:_-]{0,63}(?:![a-z]+=[A-Za-z0-9._@+/-]{1,200})?")
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# An ISO 8601 time as JupyterHub writes it: 2026-12-04T18:34:24.641372Z
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)?")
# What JupyterHub lists in a token's scopes besides those asked for: the
# scopes that let any token identify its user, and the subscopes of a scope.
IDENTIFY = ("read:users:name", "read:users:groups")
IMPLIES = {
    "servers": ("read:servers", "start:servers", "delete:servers", "read:users:name"),
    "read:servers": ("read:users:name",),
}
MAX_SERVERS = 1000  # far more than any Hub allows one user (named_server_limit_per_user)
HUB_EXAMPLE = "give the Hub's own URL, like https://hub.example.org/"


def hub_url(url: str) -> str:
    """The Hub's base URL (scheme, host, base_url, a trailing slash), from the URL
    of its home page (https://hub.example.org/ or .../hub/ or .../hub/home)."""
    base = server_url(url)
    parts = urlsplit(base)
    path = parts.path
    for tail in ("hub/home/", "hub/token/", "hub/spawn/", "hub/"):
        if path.endswith("/" + tail):
            path = path[: -len(tail)]
            break
    if "/user/" in path:
        msg = f"{base} is a server's URL, not the Hub's; {HUB_EXAMPLE}"
        raise BadURLError(msg)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def is_user_url(url: str) -> bool:
    """Whether url names one user's server (.../user/NAME/...)."""
    return "/user/" in urlsplit(server_url(url)).path


def server_path(user: str, server: str) -> str:
    """The path of user's server under the Hub's base URL: user/NAME/ or user/NAME/SERVER/."""
    path = f"user/{quote(user, safe='@+')}/"
    return path + (f"{quote(server, safe='')}/" if server else "")


def server_api_path(user: str, server: str) -> str:
    """The Hub API path of user's server: users/NAME/server or users/NAME/servers/SERVER."""
    where = f"servers/{quote(server, safe='')}" if server else "server"
    return f"users/{quote(user, safe='@+')}/{where}"


@dataclass
class Server:
    """One of the user's servers as the Hub reports it, every field checked."""

    name: str  # "" for the default server
    state: str  # running, starting, stopping or stopped
    last_activity: str | None  # ISO 8601, as the Hub wrote it

    @property
    def label(self) -> str:
        return self.name or "(default)"


@dataclass
class Identity:
    """The token's owner, the token's scopes, and (when it may read them) the servers."""

    user: str
    scopes: list[str]
    servers: dict[str, Server] | None  # None: the token may not read them
    left_out: list[str] = field(default_factory=list)  # one line for each unsafe server name


@dataclass
class IssuedToken:
    token: str
    token_id: str
    scopes: list[str]
    expires_at: str | None


class Hub:
    """The Hub's API with one token."""

    def __init__(self, url: str, token: str, ca_file: str | None = None, timeout: float = 30):
        self.url = hub_url(url)
        self.api = ServerAPI(self.url + "hub/api/", token, timeout=timeout, ca_file=ca_file)

    def refuse(self, what: str, value: object) -> NoReturn:
        """Raise UntrustedAnswer: the Hub sent what (value shown escaped)."""
        msg = f"the Hub at {self.url} sent {what}: {shown(value)}; {SUSPICIOUS}"
        raise UntrustedAnswer(msg)

    def version(self) -> str | None:
        """The Hub's version (no token needed), None if this is not a JupyterHub."""
        code, body = self.api.call("GET", "")
        if code != 200 or not isinstance(body, dict) or not isinstance(body.get("version"), str):
            return None
        version = body["version"]
        return version if re.fullmatch(r"[0-9][0-9A-Za-z.+-]{0,40}", version) else "?"

    def whoami(self) -> Identity:
        """GET user: the token's owner, its scopes, its servers (stopped ones too)."""
        code, body = self.api.call("GET", "user?include_stopped_servers=1")
        if code in (401, 403):
            msg = (
                f"the Hub at {self.url} refused the token ({code}): it has expired, was "
                f"revoked or was never valid; make a new one at {self.url}hub/token"
            )
            raise HubError(msg, code)
        if code != 200:
            raise HubError(explain(code, self.url + "hub/api/user", "Hub API", body), code)
        if not isinstance(body, dict):
            self.refuse("an answer about the token's user that is not a JSON object", body)
        user = self.user_name(body.get("name"))
        scopes = body.get("scopes", [])
        if not isinstance(scopes, list) or not all(
            isinstance(s, str) and SCOPE.fullmatch(s) for s in scopes
        ):
            self.refuse("scopes that are not a list of scopes", scopes)
        found = body.get("servers")
        if found is None:
            return Identity(user, scopes, None)
        return Identity(user, scopes, *self._servers(found))

    def user_name(self, user: object) -> str:
        if not isinstance(user, str) or not HUB_USER.fullmatch(user):
            self.refuse(f"a user name that is not a safe one ({HUB_USER_RULE})", user)
        return user

    def _servers(self, found: object) -> tuple[dict[str, Server], list[str]]:
        if not isinstance(found, dict) or len(found) > MAX_SERVERS:
            what = f"a list of servers that is not a JSON object of at most {MAX_SERVERS}"
            self.refuse(what, found)
        servers: dict[str, Server] = {}
        left_out: list[str] = []
        folded: dict[str, str] = {}  # lower-case name: name
        for name, model in found.items():
            if name != "" and not SERVER_NAME.fullmatch(name):
                left_out.append(
                    f"left out the server {shown(name, 80)}: its name cannot be an ssh host "
                    f"name safely ({SERVER_NAME_RULE})"
                )
                continue
            if name.lower() in folded:  # ssh reads host names in lower case
                left_out.append(
                    f"left out the servers {folded[name.lower()]!r} and {name!r}: ssh "
                    "cannot tell names apart that differ only in case"
                )
                servers.pop(folded[name.lower()], None)
                continue
            folded[name.lower()] = name
            if not isinstance(model, dict):
                self.refuse(f"server {shown(name)} as something not a JSON object", model)
            servers[name] = Server(name, self._state(name, model), self._activity(name, model))
        return servers, left_out

    def _state(self, name: str, model: dict[str, object]) -> str:
        ready, pending, stopped = model.get("ready"), model.get("pending"), model.get("stopped")
        if pending not in (None, "spawn", "stop", "check"):
            self.refuse(f"server {name!r} with a pending state we do not know", pending)
        if pending == "spawn":
            return "starting"
        if pending == "stop":
            return "stopping"
        if ready is True:
            return "running"
        if stopped is True or ready is False:
            return "stopped"
        self.refuse(f"server {name!r} without a ready or stopped state", model)

    def _activity(self, name: str, model: dict[str, object]) -> str | None:
        stamp = model.get("last_activity")
        if stamp is None:
            return None
        if not isinstance(stamp, str) or not TIMESTAMP.fullmatch(stamp):
            self.refuse(f"server {name!r} with a last activity that is not a time", stamp)
        return stamp

    def server_state(self, user: str, server: str) -> str | None:
        """running, starting, stopping or stopped, as the Hub says (GET users/NAME),
        or None if user has no server of that name. HubError if it will not say."""
        path = f"users/{quote(user, safe='@+')}?include_stopped_servers=1"
        code, body = self.api.call("GET", path)
        servers = body.get("servers") if code == 200 and isinstance(body, dict) else None
        if servers is None:
            if not server:
                return "stopped"  # the default server always exists
            msg = (
                f"cannot tell whether {user} has a server named {server!r}: the Hub answered "
                f"{code} (the token needs the scope read:servers!user={user})"
            )
            raise HubError(msg, code)
        if not isinstance(servers, dict):
            self.refuse("a list of servers that is not a JSON object", servers)
        model = servers.get(server)
        if model is None:
            return None if server else "stopped"
        if not isinstance(model, dict):
            self.refuse(f"server {server!r} as something not a JSON object", model)
        return self._state(server, model)

    def issue_token(self, user: str, scopes: list[str], expires_in: int, note: str) -> IssuedToken:
        """A new token for user with these scopes, expiring in expires_in seconds.

        The Hub may add the scopes that let a token identify its own user
        (read:users:name, read:users:groups); any other scope that was not
        asked for means the Hub did not limit the token: it is taken back."""
        body = {"scopes": scopes, "expires_in": expires_in, "note": note}
        code, answer = self.api.call("POST", f"users/{quote(user, safe='@+')}/tokens", body)
        if code == 403:
            msg = (
                f"the Hub at {self.url} would not make a token limited to what ssh needs (403): "
                f"the token you gave may not make tokens (it needs the scope tokens!user={user}); "
                f"use a token from {self.url}hub/token, or give --store-pasted-token to store "
                "the one you gave as it is"
            )
            raise HubError(msg, code)
        if code != 201:
            where = self.url + "hub/api/users/.../tokens"
            raise HubError(explain(code, where, "token API", answer), code)
        if not isinstance(answer, dict):
            self.refuse("a new token that is not a JSON object", answer)
        token, token_id = answer.get("token"), answer.get("id")
        if not isinstance(token, str) or not TOKEN.fullmatch(token):
            self.refuse("a new token that is not one", "<token>")
        secret(token)
        if not isinstance(token_id, str) or not TOKEN_ID.fullmatch(token_id):
            self.refuse("a token id that is not one", token_id)
        granted = answer.get("scopes")
        allowed = {f"{implied}!user={user}" for implied in IDENTIFY}
        for scope in scopes:
            base, _, which = scope.partition("!")
            allowed |= {scope} | {f"{implied}!{which}" for implied in IMPLIES.get(base, ())}
        if not isinstance(granted, list) or not set(granted) <= allowed:
            self.revoke(user, token_id)
            version = self.version() or "?"
            msg = (
                f"the Hub at {self.url} (JupyterHub {version}) cannot make a token limited to "
                "what ssh needs (JupyterHub 3 or newer can); give --store-pasted-token to store "
                "the token you gave as it is"
            )
            raise HubError(msg)
        expires_at = answer.get("expires_at")
        if expires_at is not None and not (
            isinstance(expires_at, str) and TIMESTAMP.fullmatch(expires_at)
        ):
            self.revoke(user, token_id)
            self.refuse("an expiry time that is not a time", expires_at)
        return IssuedToken(token, token_id, sorted(granted), expires_at)

    def revoke(self, user: str, token_id: str) -> bool:
        """Take a token back (best effort): whether the Hub says it is gone."""
        if not TOKEN_ID.fullmatch(token_id):
            return False
        try:
            code, _ = self.api.call("DELETE", f"users/{quote(user, safe='@+')}/tokens/{token_id}")
        except HubError:
            return False
        except Exception:  # a failed clean-up never hides the error that caused it
            return False
        return code in (204, 404)


def ssh_scopes(user: str, start: bool, start_scope: str = "start:servers") -> list[str]:
    """What a token for ssh needs: reach the user's servers, read their state,
    and start them only where it is asked for (start:servers, JupyterHub 6;
    before it, servers, which may also stop them)."""
    scopes = [f"access:servers!user={user}", f"read:servers!user={user}"]
    if start:
        scopes.append(f"{start_scope}!user={user}")
    return scopes


def parse_duration(text: str) -> int:
    """Seconds from 30d, 12h, 90m, 3600s or 3600; ValueError for anything else."""
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*([dhms]?)\s*", text or "")
    if not match:
        msg = f"{text!r} is not a duration: give it like 30d, 12h, 90m or 3600 (seconds)"
        raise ValueError(msg)
    seconds = int(match[1]) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[match[2]]
    if seconds <= 0:
        msg = f"{text!r}: a token must live for some time; give it like 30d"
        raise ValueError(msg)
    return seconds


def server_of_host(name: str, host: str) -> str:
    """The server that the ssh host name stands for: NAME is the default server
    (""), NAME.SERVER the named server SERVER; HubError for any other name."""
    if host == name:
        return ""
    server = host[len(name) + 1 :] if host.startswith(name + ".") else None
    if server is None or not SERVER_NAME.fullmatch(server):
        msg = (
            f"{shown(host, 80)} is not {name} or {name}.SERVER with a server name of "
            f"{SERVER_NAME_RULE}"
        )
        raise HubError(msg)
    return server


def ssh_name(name: str, server: str) -> str:
    return f"{name}.{server}" if server else name


# What config-ssh keeps beside the token (NAME.token): NAME.hub.json, with the
# Hub, the user, the token's id, scopes and expiry (never the token itself).


def info_path(token_file: str) -> str:
    stem = token_file[: -len(".token")] if token_file.endswith(".token") else token_file
    return stem + ".hub.json"


def read_info(token_file: str) -> dict[str, Any]:
    """What config-ssh wrote beside token_file; {} if there is nothing usable."""
    import json

    try:
        with open(info_path(token_file), "rb") as stream:
            info = json.loads(stream.read(64 * 1024))
    except (OSError, ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def expiry_text(expires_at: object) -> str | None:
    """2026-12-04 18:34 UTC for the Hub's 2026-12-04T18:34:24.641372Z; None if unreadable."""
    if not isinstance(expires_at, str) or not TIMESTAMP.fullmatch(expires_at):
        return None
    return expires_at[:10] + " " + expires_at[11:16] + " UTC"


def expired(expires_at: object, now: float | None = None) -> bool:
    """Whether the Hub's expiry time (UTC) has passed."""
    import calendar
    import time

    if not isinstance(expires_at, str) or not TIMESTAMP.fullmatch(expires_at):
        return False
    when = calendar.timegm(time.strptime(expires_at[:19], "%Y-%m-%dT%H:%M:%S"))
    return when <= (time.time() if now is None else now)
