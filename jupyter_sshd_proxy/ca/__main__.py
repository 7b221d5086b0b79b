"""python -m jupyter_sshd_proxy.ca: the certificate authority, as the Hub launches it.

    c.JupyterHub.services = [{
        "name": "ssh-ca",
        "url": "http://127.0.0.1:8765",
        "command": [sys.executable, "-m", "jupyter_sshd_proxy.ca",
                    "--state-dir=/srv/jupyterhub/ssh-ca"],
    }]

It listens where JUPYTERHUB_SERVICE_URL says, serves under
JUPYTERHUB_SERVICE_PREFIX, and asks the Hub (JUPYTERHUB_API_URL, with
JUPYTERHUB_API_TOKEN) whose token each request carries.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from urllib.parse import urlsplit

from jupyter_sshd_proxy_client.errors import SSHDProxyError

from . import signing, state
from .service import Authority, event_logger, log, make_app

MAX_BODY = 64 * 1024  # bytes of a request's body (tornado's default: 100 MB)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_sshd_proxy.ca",
        description="The Hub's SSH certificate authority (a JupyterHub service).",
    )
    parser.add_argument("--state-dir", required=True, help="private directory: key, serials")
    parser.add_argument("--ca-key", help="the signing key (e.g. a mounted Secret); default: "
                        "<state dir>/ca_key, made on first start")  # fmt: skip
    parser.add_argument("--trusted-key", action="append", default=[],
                        help="a public key file servers trust too (rotation)")  # fmt: skip
    parser.add_argument("--validity", default="12h", help="default validity (12h)")
    parser.add_argument("--max-validity", default="24h", help="the most a request gets (24h)")
    parser.add_argument("--events-file", help="append the audit events (JSON lines) here")
    parser.add_argument("--ssh-keygen", default="", help="path of ssh-keygen")
    parser.add_argument("--url", default="", help="where to listen (JUPYTERHUB_SERVICE_URL)")
    return parser


def authority_from(args: argparse.Namespace) -> Authority:
    ssh_keygen = args.ssh_keygen or shutil.which("ssh-keygen")
    if not ssh_keygen:
        msg = "ssh-keygen not found on PATH; install openssh-client, or give --ssh-keygen"
        raise SSHDProxyError(msg)
    default = signing.parse_duration(args.validity, "--validity")
    maximum = signing.parse_duration(args.max_validity, "--max-validity")
    if default > maximum:
        msg = f"--validity={args.validity} is more than --max-validity={args.max_validity}"
        raise SSHDProxyError(msg)
    state_dir = state.ensure_state_dir(os.path.abspath(args.state_dir))
    ca_key = state.ensure_ca_key(ssh_keygen, state_dir, args.ca_key)
    trusted = [key for path in args.trusted_key for key in state.read_public_keys(path)]
    return Authority(
        ssh_keygen=ssh_keygen,
        state_dir=state_dir,
        ca_key=ca_key,
        signing_key=state.public_key_of(ssh_keygen, ca_key),
        trusted=trusted,
        default_validity=default,
        max_validity=maximum,
        events=event_logger(args.events_file),
    )


async def serve(argv: list[str] | None = None) -> None:
    from jupyterhub.services.auth import HubAuth

    args = parse_args(argv)
    hub_auth = HubAuth(allow_token_in_url=False)
    if not hub_auth.access_scopes:  # HubAuth would then take any token of a user
        msg = (
            "no access scope to check tokens against (JUPYTERHUB_SERVICE_NAME and "
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES are unset); set JUPYTERHUB_SERVICE_NAME=ssh-ca, "
            "as the Hub does for the services it starts"
        )
        raise SSHDProxyError(msg)
    authority = authority_from(args)
    url = urlsplit(args.url or os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8765"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    app = make_app(authority, hub_auth, prefix)
    # tornado reads a body whole before the handler looks at the token: keep
    # it to what a request needs (a key line is at most 16 KiB).
    app.listen(url.port or 80, url.hostname or "127.0.0.1", max_body_size=MAX_BODY)
    log.info(
        "ssh-ca: signing with %s (%s) on %s%s; principals hub:<user>, validity %ds (at most %ds)",
        authority.ca_key, authority.signing_key.fingerprint, url.netloc, prefix,
        authority.default_validity, authority.max_validity,
    )  # fmt: skip
    # The Hub stops a service with SIGINT, then SIGTERM 10 s later: stop at
    # either, even where SIGINT came ignored (a Hub started with nohup or `&`
    # passes that on, and Python then raises no KeyboardInterrupt).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("ssh-ca: stopping")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s] %(message)s")
    try:
        asyncio.run(serve(argv))
    except (SSHDProxyError, ValueError) as error:
        print(f"ssh-ca: {error}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
