"""The /sshd/ route, authorized like a terminal: ssh is a shell.

jupyter-server-proxy registers the route's handler itself, and its
ProxyHandler.prepare() only authenticates: any user the server knows could
upgrade to a WebSocket and reach sshd, even one whose authorizer refuses
terminals. A shell through ssh is a terminal, so the upgrade must pass the
check jupyter_server_terminals makes before it opens one: `execute` on
`terminals`.

AuthorizedUpgrade is that check, as a mixin of its own, so other behaviour of
the route (flow control, ...) can be combined with it in SSHDRouteHandler.
install() puts SSHDRouteHandler in the place of the handler jupyter-server-proxy
registered: our server extension loads after jupyter_server_proxy's, finds the
rule for the `sshd` entry point in the Tornado router and replaces its target.
jupyter-server-proxy makes one handler class per server, carrying that
server's settings (command, timeout, ...) set in its __init__; the
replacement derives from both, so those settings stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.utils import warn_disabled_authorization
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.rawsocket import SuperviseAndRawSocketHandler
from tornado import web
from tornado.routing import PathMatches, Rule

ROUTE_NAME = "sshd"  # the name of our jupyter_serverproxy_servers entry point
AUTH_ACTION = "execute"  # what jupyter_server_terminals asks before opening a terminal
AUTH_RESOURCE = "terminals"


class AuthorizedUpgrade:
    """Refuse (403) every request of a user who may not open a terminal.

    Mixed in before a jupyter-server-proxy handler: its prepare() runs first
    and authenticates (403 for a WebSocket upgrade without a user)."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        await super().prepare(*args, **kwargs)
        if self._finished:
            return  # the parent answered already (a redirect to the login page)
        user = self.current_user
        if not user:
            raise web.HTTPError(403)
        authorizer = self.authorizer
        if authorizer is None:  # as jupyter_server_terminals does
            warn_disabled_authorization()
            return
        if not await ensure_async(authorizer.is_authorized(self, user, AUTH_ACTION, AUTH_RESOURCE)):
            raise web.HTTPError(
                403,
                "ssh needs the right to open a terminal (%s on %s), which this user does not have",
                AUTH_ACTION,
                AUTH_RESOURCE,
            )


class SSHDRouteHandler(AuthorizedUpgrade, SuperviseAndRawSocketHandler):
    """The /sshd/ route: jupyter-server-proxy's raw socket proxy, authorized like a terminal."""


def _rules(router: Any, seen: set[int]) -> Iterator[Rule]:
    """Every rule of a Tornado router, and of the routers it routes to."""
    for rule in getattr(router, "rules", ()):
        if id(rule) in seen:
            continue
        seen.add(id(rule))
        yield rule
        yield from _rules(rule.target, seen)


def install(web_app: web.Application, base_url: str, log: logging.Logger) -> bool:
    """Put SSHDRouteHandler in the place of jupyter-server-proxy's /sshd/ handler.

    The rule is the one whose handler is jupyter-server-proxy's raw socket
    proxy and whose path is the one it makes from the server's name
    (<base_url>sshd/(.*)). False, after one error line, if there is none."""
    path = url_path_join(base_url, ROUTE_NAME, "(.*)")
    found = False
    for rule in _rules(web_app.default_router, set()):
        target = rule.target
        if not (
            isinstance(target, type)
            and issubclass(target, SuperviseAndRawSocketHandler)
            and isinstance(rule.matcher, PathMatches)
            and rule.matcher.regex.pattern in (path, path + "$")
        ):
            continue
        if not issubclass(target, SSHDRouteHandler):
            rule.target = type(
                SSHDRouteHandler.__name__,
                (SSHDRouteHandler, target),
                {"__module__": __name__, "__doc__": SSHDRouteHandler.__doc__},
            )
        found = True
    if not found:
        log.error(
            "jupyter-sshd-proxy: jupyter-server-proxy's %s route was not found, so ssh is not "
            "limited to users who may open a terminal; check that jupyter_server_proxy is "
            "installed and enabled",
            url_path_join(base_url, ROUTE_NAME) + "/",
        )
    return found
