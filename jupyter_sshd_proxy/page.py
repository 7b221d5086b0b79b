"""The page at <base_url>sshd-proxy/: how to ssh into this very server.

The HTML carries only what the browser cannot find out itself: the base URL,
the XSRF token and, on JupyterHub, where the token page is and which scope a
token needs. The page's script (static/page.js) computes the public URL from
the browser's own location (so proxies in between do not matter) and does
everything else through the REST endpoints under sshd-proxy/api/, with the
cookie and X-XSRFToken header, as JupyterLab does.

    GET sshd-proxy/               the page (authorized like the API: "terminals")
    GET sshd-proxy/static/NAME    its script, style sheet and icon
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from . import __version__
from .handlers import AUTH_RESOURCE

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).parent
STATIC = HERE / "static"
# Everything the page loads, and nothing else: no CDN, no network.
ASSETS = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "ssh.svg": "image/svg+xml",
}
# The page runs only its own script and talks only to this server.
PAGE_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
)


class HubInfo(TypedDict):
    """What the page needs to know of JupyterHub."""

    token_page: str  # where users make a token
    scope: str  # the scope that token needs to reach this server


def hub_info(environ: Mapping[str, str]) -> HubInfo | None:
    """On JupyterHub (the spawner sets JUPYTERHUB_USER), where users get a token
    and the scope it needs to reach this server; None elsewhere."""
    user = environ.get("JUPYTERHUB_USER", "").strip()
    if not user:
        return None
    server = environ.get("JUPYTERHUB_SERVER_NAME", "").strip()
    public_hub = environ.get("JUPYTERHUB_PUBLIC_HUB_URL", "").strip()
    if public_hub.startswith(("https://", "http://")):
        token_page = url_path_join(public_hub, "token")
    else:
        # Same origin as this page: <hub base_url>hub/token.
        hub_base = environ.get("JUPYTERHUB_BASE_URL", "").strip() or "/"
        if not hub_base.startswith("/"):
            hub_base = "/" + hub_base
        if "\\" in hub_base or hub_base.startswith("//"):
            # A browser reads /\\host/ and //host/ as another site: stay on this one.
            hub_base = "/"
        token_page = url_path_join(hub_base, "hub", "token")
    return {"token_page": token_page, "scope": f"access:servers!server={user}/{server}"}


@functools.lru_cache(maxsize=1)
def _templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)


def render_page(*, base_url: str, xsrf_token: str, hub: HubInfo | None) -> str:
    return (
        _templates()
        .get_template("page.html")
        .render(
            base_url=base_url,
            static=url_path_join(base_url, "sshd-proxy", "static") + "/",
            xsrf_token=xsrf_token,
            hub=hub,
            version=__version__,
        )
    )


class PageHandler(JupyterHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, hub: HubInfo | None = None) -> None:
        self.hub = hub

    @property
    def content_security_policy(self) -> str:
        return "; ".join((super().content_security_policy, *PAGE_POLICY))

    @web.authenticated
    @authorized("read")  # type: ignore[untyped-decorator]  # authorized(action) is mistyped upstream
    def get(self) -> None:
        # Reading it sets the _xsrf cookie too: the script sends it back as X-XSRFToken.
        xsrf_token: bytes | str = self.xsrf_token
        if isinstance(xsrf_token, bytes):
            xsrf_token = xsrf_token.decode()
        html = render_page(base_url=self.base_url, xsrf_token=xsrf_token, hub=self.hub)
        self.set_header("Cache-Control", "no-store")
        self.finish(html)


class AssetHandler(JupyterHandler):
    """The page's own files, from a fixed list. Only for logged-in users: they
    are of no use to anyone else."""

    @web.authenticated
    def get(self, name: str) -> None:
        if name not in ASSETS:
            raise web.HTTPError(404)
        self.set_header("Content-Type", ASSETS[name])
        # Revalidated each time (tornado answers 304 when the ETag matches), so a
        # new version of the package shows at once.
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC / name).read_bytes())


def page_handlers(base_url: str, environ: Mapping[str, str] | None = None) -> list[tuple[Any, ...]]:
    """The page's routes, for the server extension to add."""
    hub = hub_info(os.environ if environ is None else environ)
    page = url_path_join(base_url, "sshd-proxy")
    return [
        (page + "/?", PageHandler, {"hub": hub}),
        (url_path_join(page, "static", "([^/]+)"), AssetHandler),
    ]
