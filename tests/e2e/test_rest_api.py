"""docs/rest-api.yml against the real thing.

Every response the document gives (path, method, status) is asked for from a
real Jupyter server, and the answer must be that status with a body its
schema accepts; every request this file makes must be documented; and every
route that the server extension adds (found in a real ServerApp's router) must
be in the document, with the methods its handler answers.

Only the answers need a running server with sshd; the document's validity
and the routes (a ServerApp initialized in a subprocess, not serving) need
nothing but Python.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate as validate_openapi

from jupyter_sshd_proxy import __version__

from ..support.helpers import REPO, make_key

SPEC = yaml.safe_load((REPO / "docs" / "rest-api.yml").read_text())
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage | None
    body: bytes


@dataclass
class Servers:
    good: object  # JupyterServer whose sshd runs
    broken: object  # JupyterServer with an invalid setting
    keys_dir: Path


def ask(server, method: str, path: str, token: str | None = "", headers=None, body=None) -> Answer:
    """One request; token "" is the server's own, None sends none."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"token {token or server.token}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def post_key(server, line: str, **extra) -> Answer:
    body = json.dumps({"key": line, **extra}).encode()
    headers = {"Content-Type": "application/json"}
    return ask(server, "POST", "/sshd-proxy/api/authorized-keys", headers=headers, body=body)


def delete_key(server, fingerprint: str, token: str | None = "") -> Answer:
    query = urllib.parse.urlencode({"fingerprint": fingerprint})
    return ask(server, "DELETE", "/sshd-proxy/api/authorized-keys?" + query, token=token)


def upgrade(server, token: str | None = "") -> Answer:
    """The answer to a WebSocket upgrade of /sshd/ (the connection is closed at once)."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key,
    }
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    if token is not None:
        headers["Authorization"] = f"token {token or server.token}"
    try:
        connection.request("GET", "/sshd/", headers=headers)
        response = connection.getresponse()
        # A 101 response has no body to read: the WebSocket follows.
        body = b"" if response.status == 101 else response.read()
        return Answer(response.status, response.headers, body)
    finally:
        connection.close()


def new_key(servers: Servers, name: str) -> tuple[str, str]:
    """(public key line, fingerprint) of a fresh key."""
    path = make_key(servers.keys_dir / name)
    line = path.with_suffix(".pub").read_text().strip()
    output = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path.with_suffix(".pub"))],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return line, output.split()[1]


def _added_twice(servers: Servers) -> Answer:
    line, fingerprint = new_key(servers, "twice")
    assert post_key(servers.good, line).status == 201
    try:
        return post_key(servers.good, line)
    finally:
        delete_key(servers.good, fingerprint)


def _added_then_removed(servers: Servers) -> Answer:
    line, fingerprint = new_key(servers, "removed")
    assert post_key(servers.good, line).status == 201
    return delete_key(servers.good, fingerprint)


def _added(servers: Servers) -> Answer:
    line, fingerprint = new_key(servers, "added")
    try:
        return post_key(servers.good, line)
    finally:
        assert delete_key(servers.good, fingerprint).status == 204


def _too_large(servers: Servers) -> Answer:
    body = json.dumps({"key": "x" * (64 * 1024)}).encode()
    headers = {"Content-Type": "application/json"}
    return ask(servers.good, "POST", API + "authorized-keys", headers=headers, body=body)


API = "/sshd-proxy/api/"
NEVER_ADDED = "SHA256:" + "A" * 43
Case = Callable[[Servers], Answer]

# (path, method, status): a request that must get that answer.
CASES: dict[tuple[str, str, str], Case] = {
    (API + "status", "get", "200"): lambda s: ask(s.good, "GET", API + "status"),
    (API + "status", "get", "403"): lambda s: ask(s.good, "GET", API + "status", token=None),
    (API + "host-keys", "get", "200"): lambda s: ask(s.good, "GET", API + "host-keys"),
    (API + "host-keys", "get", "403"): lambda s: ask(
        s.good, "GET", API + "host-keys", token="wrong"
    ),
    (API + "host-keys", "get", "503"): lambda s: ask(s.broken, "GET", API + "host-keys"),
    (API + "authorized-keys", "get", "200"): lambda s: ask(s.good, "GET", API + "authorized-keys"),
    (API + "authorized-keys", "get", "403"): lambda s: ask(
        s.good, "GET", API + "authorized-keys", token=None
    ),
    (API + "authorized-keys", "get", "503"): lambda s: ask(
        s.broken, "GET", API + "authorized-keys"
    ),
    (API + "authorized-keys", "post", "201"): _added,
    (API + "authorized-keys", "post", "400"): lambda s: post_key(s.good, "ssh-ed25519 nonsense"),
    (API + "authorized-keys", "post", "403"): lambda s: ask(
        s.good, "POST", API + "authorized-keys", token=None, body=b"{}"
    ),
    (API + "authorized-keys", "post", "409"): _added_twice,
    (API + "authorized-keys", "post", "413"): _too_large,
    (API + "authorized-keys", "post", "503"): lambda s: post_key(s.broken, new_key(s, "broken")[0]),
    (API + "authorized-keys", "delete", "204"): _added_then_removed,
    (API + "authorized-keys", "delete", "400"): lambda s: delete_key(s.good, "SHA256:short"),
    (API + "authorized-keys", "delete", "403"): lambda s: delete_key(
        s.good, NEVER_ADDED, token=None
    ),
    (API + "authorized-keys", "delete", "404"): lambda s: delete_key(s.good, NEVER_ADDED),
    (API + "authorized-keys", "delete", "503"): lambda s: delete_key(s.broken, NEVER_ADDED),
    ("/sshd-proxy/", "get", "200"): lambda s: ask(s.good, "GET", "/sshd-proxy/"),
    ("/sshd-proxy/", "get", "302"): lambda s: ask(s.good, "GET", "/sshd-proxy/", token=None),
    ("/sshd-proxy/static/{name}", "get", "200"): lambda s: ask(
        s.good, "GET", "/sshd-proxy/static/page.js"
    ),
    ("/sshd-proxy/static/{name}", "get", "302"): lambda s: ask(
        s.good, "GET", "/sshd-proxy/static/page.js", token=None
    ),
    ("/sshd-proxy/static/{name}", "get", "404"): lambda s: ask(
        s.good, "GET", "/sshd-proxy/static/page.html"
    ),
    ("/sshd/", "get", "101"): lambda s: upgrade(s.good),
    ("/sshd/", "get", "403"): lambda s: upgrade(s.good, token=None),
}


def documented() -> list[tuple[str, str, str]]:
    return [
        (path, method, status)
        for path, operations in SPEC["paths"].items()
        for method, operation in operations.items()
        if method in METHODS
        for status in operation["responses"]
    ]


def resolve(node: dict) -> dict:
    """node, or what its $ref (#/components/...) points to."""
    while "$ref" in node:
        found = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def check_answer(answer: Answer, response: dict) -> None:
    """The answer's body and headers are what the documented response says."""
    for header in response.get("headers", {}):
        assert answer.headers is not None
        assert answer.headers.get(header), f"no {header} header"
    content = response.get("content")
    if content is None:
        if answer.status != 101:
            assert answer.body == b"", answer.body[:200]
        return
    assert answer.headers is not None
    media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type in content, f"{media_type} is not one of {sorted(content)}"
    schema = content[media_type]["schema"]
    value = json.loads(answer.body) if media_type == "application/json" else answer.body.decode()
    # $refs in the schema point into the document's components.
    jsonschema.Draft202012Validator({**schema, "components": SPEC["components"]}).validate(value)


@pytest.fixture(scope="module")
def servers(setup, run_dir):
    keys_dir = run_dir / "rest-api-keys"
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    with setup.running() as good:
        # An invalid setting: every request that needs the settings answers 503.
        broken = setup.server(JUPYTER_SSHD_PROXY_LOG_LEVEL="LOUDLY").start()
        try:
            yield Servers(good, broken, keys_dir)
        finally:
            broken.stop()


def test_the_document_is_valid_openapi_of_this_version():
    validate_openapi(SPEC)
    assert SPEC["info"]["version"] == __version__


# One account's server is enough: the routes are the same for every account.
@pytest.mark.parametrize("account", ["self"], indirect=True)
@pytest.mark.parametrize(
    ("path", "method", "status"),
    documented(),
    ids=[f"{method.upper()} {path} {status}" for path, method, status in documented()],
)
def test_each_documented_answer_is_what_the_server_gives(servers, path, method, status):
    case = CASES.get((path, method, status))
    assert case, f"no request in this file makes {method.upper()} {path} answer {status}: add one"
    answer = case(servers)
    assert str(answer.status) == status, answer.body[:500]
    response = resolve(SPEC["paths"][path][method]["responses"][status])
    check_answer(answer, response)


def test_every_request_here_is_documented():
    assert set(CASES) - set(documented()) == set()


ROUTES = """
import asyncio, json, sys
from tornado.routing import PathMatches, RuleRouter
from jupyter_server.serverapp import ServerApp

def walk(router):
    for rule in router.rules:
        if isinstance(rule.target, RuleRouter):
            yield from walk(rule.target)
        elif isinstance(rule.matcher, PathMatches) and isinstance(rule.target, type):
            yield rule.matcher.regex.pattern, rule.target

async def main():
    app = ServerApp.instance()  # as `jupyter server` makes it: the entry point finds it
    app.init_signal = lambda: None
    app.initialize(argv=sys.argv[2:], new_httpserver=False)
    routes = []
    for pattern, handler in walk(app.web_app.default_router):
        ours = [c for c in handler.__mro__ if c.__module__.startswith("jupyter_sshd_proxy")]
        if ours:
            methods = sorted(
                m for m in json.loads(sys.argv[1])
                if any(m in vars(c) for c in ours)
            )
            routes.append((pattern, handler.__module__, methods))
    print(json.dumps(routes))

asyncio.run(main())
"""


def routes_of_the_extension(tmp_path: Path) -> list[tuple[str, str, list[str]]]:
    """(pattern, module, methods its own classes define) of each route of ours."""
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", ROUTES, json.dumps(METHODS), "--ServerApp.token=unused"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def as_documented_path(pattern: str) -> str:
    """A tornado route pattern as an OpenAPI path with its parameters as {}."""
    path = pattern.removesuffix("$")
    path = path.replace("/?", "/").replace("([^/]+)", "{}")
    return path.removesuffix("(.*)")


def test_every_route_of_the_extension_is_documented(tmp_path):
    routes = routes_of_the_extension(tmp_path)
    assert routes, "the server extension added no route"
    in_document = {
        path.split("{")[0] + ("{}" if "{" in path else ""): {
            method for method in operations if method in METHODS
        }
        for path, operations in SPEC["paths"].items()
    }
    found = {}
    for pattern, module, methods in routes:
        path = as_documented_path(pattern)
        # The /sshd/ route is jupyter-server-proxy's handler, guarded by ours:
        # its GET (the WebSocket upgrade) is jupyter-server-proxy's method.
        found[path] = set(methods) or {"get"}
        assert path in in_document, f"{pattern} ({module}) is not in docs/rest-api.yml"
    assert found == in_document
