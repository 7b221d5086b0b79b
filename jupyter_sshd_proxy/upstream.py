"""What this package uses of jupyter-server-proxy beyond its documented process
spec, all in this one module.

jupyter-server-proxy has no public API for what the /sshd/ route needs (an
authorization check before the upgrade, flow control, knowing who asked to
start the process), so the route is made of its raw socket handler, and this
module is the only place that names that handler's insides. CONTRACT lists
each of them; tests/unit/test_upstream_contract.py checks every item by name
against the installed jupyter-server-proxy, and tests/e2e/test_upstream_versions.py
runs the lowest and the newest supported releases, each in its own venv.

When an item is missing (jupyter-server-proxy 4.2 has no raw socket proxy; a
future release may rename something), problem() says which, in one line, and
the route is left unguarded: sshd is then never started (server.py asks
starting_route() before it starts anything).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from tornado import web
from tornado.routing import PathMatches, Rule

FIRST_SUPPORTED = "4.3.0"  # the first release with the raw socket proxy
INSTALL_HINT = f"install jupyter-server-proxy>={FIRST_SUPPORTED}"

try:
    from jupyter_server_proxy.rawsocket import SuperviseAndRawSocketHandler

    _IMPORT_PROBLEM: str | None = None
except ImportError as error:  # 4.2 and older; or not installed at all
    _IMPORT_PROBLEM = f"{type(error).__name__}: {error}"

    class SuperviseAndRawSocketHandler(web.RequestHandler):  # type: ignore[no-redef]  # stand-in
        """A stand-in, so this package imports; the route is never guarded with it."""


if TYPE_CHECKING:
    from jupyter_server.base.handlers import JupyterHandler
    from tornado.websocket import WebSocketHandler

    class RouteHandler(WebSocketHandler, JupyterHandler):
        """What route.py's mixins may use of the handler they are mixed into
        (RawSocketRoute), written down for mypy: jupyter-server-proxy has no types.
        Its handlers are tornado WebSocket handlers and Jupyter handlers."""

        backend_address: str
        unix_socket: str  # the supervisor's socket (jupyter-server-proxy's mkdtemp)

        def check_origin(self, origin: str | None = None) -> bool: ...
        async def open(self, *args: Any, **kwargs: Any) -> None: ...
        async def proxy_open(self, host: str, port: int, proxied_path: str = "") -> None: ...

    RouteMixin = RouteHandler
else:
    RouteMixin = object  # at run time, the mixins are plain classes


# The route handler that is starting the process right now, if it is ours:
# set around jupyter-server-proxy's call of the spec's command (get_cmd).
_starting: contextvars.ContextVar[Any] = contextvars.ContextVar("sshd_route_starting")


def version() -> str:
    """The installed jupyter-server-proxy's version, as its package metadata says
    (its __version__ was wrong in some releases: 4.2.0 says 4.1.1-0.dev)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("jupyter-server-proxy")
    except PackageNotFoundError:
        return "(not installed)"


def _mentions(function: Any, *words: str) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return all(word in source for word in words)


def _params(function: Any) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


SPEC_KEYS = ("command", "raw_socket_proxy", "unix_socket", "update_last_activity", "timeout")


def _contract() -> list[tuple[str, Callable[[], bool]]]:
    """(name, check) for each thing of jupyter-server-proxy that this package uses."""
    from jupyter_server_proxy import config as sp_config
    from jupyter_server_proxy import handlers as sp_handlers

    raw = SuperviseAndRawSocketHandler
    supervise = sp_handlers.SuperviseAndProxyHandler
    named = sp_handlers.NamedLocalProxyHandler
    process = sp_config.ServerProcess  # a namedtuple up to 4.4, a traitlets class since 4.5
    spec = set(getattr(process, "_fields", ())) or set(process.class_trait_names())
    return [
        # The raw socket proxy itself (4.3.0 and later).
        ("jupyter_server_proxy.rawsocket.SuperviseAndRawSocketHandler", lambda: True),
        # The keys of the process spec that we give.
        *((f"ServerProcess.{key}", lambda key=key: key in spec) for key in SPEC_KEYS),
        # open() starts the process, then calls proxy_open(host, port, proxied_path).
        (
            "RawSocketHandler.proxy_open(host, port, proxied_path)",
            lambda: _params(raw.proxy_open)[1:] == ["host", "port", "proxied_path"],
        ),
        (
            "SuperviseAndProxyHandler.open -> ensure_process()",
            lambda: _mentions(supervise.open, "self.ensure_process()"),
        ),
        # ensure_process() calls get_cmd(), which calls the spec's command with
        # the arguments it names (here unix_socket) from process_args.
        (
            "SuperviseAndProxyHandler.ensure_process -> get_cmd()",
            lambda: _mentions(supervise.ensure_process, "self.get_cmd()"),
        ),
        (
            "SuperviseAndProxyHandler.get_cmd -> command",
            lambda: _mentions(supervise.get_cmd, "self.command"),
        ),
        (
            "NamedLocalProxyHandler.process_args['unix_socket']",
            lambda: _mentions(named.process_args.fget, '"unix_socket"'),
        ),
        # unix_socket = True: a path in a new private directory (mkdtemp, 0700).
        (
            "SuperviseAndProxyHandler.unix_socket: mkdtemp for True",
            lambda: _mentions(supervise.unix_socket.fget, "mkdtemp"),
        ),
        # The route of an entry point named NAME: <base_url>NAME/(.*).
        ("make_handlers: <base_url>NAME/(.*)", lambda: _mentions(sp_config.make_handlers, "(.*)")),
    ]


def broken() -> list[str]:
    """The items of the contract that the installed jupyter-server-proxy breaks, by name."""
    if _IMPORT_PROBLEM:
        return ["jupyter_server_proxy.rawsocket.SuperviseAndRawSocketHandler"]
    failed = []
    for name, holds in _contract():
        try:
            ok = holds()
        except Exception:  # an attribute gone, a signature changed: broken, by name
            ok = False
        if not ok:
            failed.append(name)
    return failed


def problem() -> str | None:
    """One line saying why the installed jupyter-server-proxy cannot carry the
    guarded route, or None when it can."""
    if _IMPORT_PROBLEM:
        return (
            f"jupyter-server-proxy {version()} has no raw socket proxy "
            f"({_IMPORT_PROBLEM}), so the /sshd/ route cannot be guarded and sshd is not "
            f"started; {INSTALL_HINT}"
        )
    failed = broken()
    if failed:
        return (
            f"jupyter-server-proxy {version()} changed what jupyter-sshd-proxy relies on "
            f"({', '.join(failed)}), so the /sshd/ route cannot be guarded and sshd is not "
            "started; install a jupyter-server-proxy release that jupyter-sshd-proxy supports "
            "(see its requirements)"
        )
    return None


class RawSocketRoute(SuperviseAndRawSocketHandler):  # type: ignore[misc]  # an untyped base
    """jupyter-server-proxy's raw socket route, under the names route.py uses."""

    def get_cmd(self) -> Any:
        # The spec's command is called in here: it learns who asks (starting_route).
        token = _starting.set(self)
        try:
            return super().get_cmd()
        finally:
            _starting.reset(token)

    @property
    def backend_address(self) -> str:
        return str(self.unix_socket) if self.unix_socket else f"port {self.port}"


def starting_route() -> Any:
    """The RawSocketRoute whose request is starting the process now, or None
    (jupyter-server-proxy's own handler, or a call from elsewhere)."""
    return _starting.get(None)


def _rules(router: Any, seen: set[int]) -> Iterator[Rule]:
    """Every rule of a Tornado router, and of the routers it routes to."""
    for rule in getattr(router, "rules", ()):
        if id(rule) in seen:
            continue
        seen.add(id(rule))
        yield rule
        yield from _rules(rule.target, seen)


def replace_route(web_app: web.Application, path: str, guarded: type) -> bool:
    """Put guarded in the place of jupyter-server-proxy's handler of path.

    jupyter-server-proxy registers one handler class per server, carrying its
    settings (command, timeout, ...) set in its __init__: the replacement
    derives from guarded and from it, so those stay as they were. The rule is
    the one whose handler is a raw socket proxy and whose pattern is path.
    False if there is none."""
    if problem():
        return False
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
        if not issubclass(target, guarded):
            rule.target = type(
                guarded.__name__,
                (guarded, target),
                {"__module__": guarded.__module__, "__doc__": guarded.__doc__},
            )
        found = True
    return found
