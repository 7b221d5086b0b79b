"""jupyter-sshd-proxy: the command line.

jupyter-sshd-proxy proxy URL       the ssh ProxyCommand
jupyter-sshd-proxy config-ssh URL  make `ssh NAME` work, with the host key pinned
jupyter-sshd-proxy doctor URL      check each link from here to sshd
jupyter-sshd-proxy settings        the server-side settings, their variables and defaults
jupyter-sshd-proxy demo            a local Jupyter server and an ssh session into it
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import SSHDProxyError

CA_FILE_HELP = (
    "PEM file with the CA certificate that signed the server's certificate (a Hub with "
    "a private CA); only that CA is trusted then. Default: the system's, or $SSL_CERT_FILE"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-sshd-proxy",
        description="ssh into a Jupyter server through its authenticated WebSocket.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    proxy = commands.add_parser(
        "proxy",
        help="pipe stdin/stdout over the server's /sshd/ WebSocket (an ssh ProxyCommand)",
        description="Use as ssh's ProxyCommand. The token comes from "
        "$JUPYTER_SSHD_PROXY_TOKEN, $JUPYTERHUB_API_TOKEN, $JUPYTER_TOKEN or "
        "--token-file, never from the command line.",
    )
    proxy.add_argument(
        "url", help="the Jupyter server's URL, e.g. https://hub.example.org/user/NAME/"
    )
    proxy.add_argument("--token-file", help="file holding the token (mode 600)")
    proxy.add_argument("--ca-file", help=CA_FILE_HELP)
    proxy.add_argument(
        "--start",
        action="store_true",
        help="if the server is not running, start it through the JupyterHub API, then connect",
    )
    proxy.add_argument(
        "--ping-interval",
        type=float,
        default=30.0,
        help="seconds between WebSocket pings that keep idle sessions open (0: none; default 30)",
    )

    configure = commands.add_parser(
        "config-ssh",
        help="make `ssh NAME` work: upload your key, pin the host keys, write a Host block",
        description="Uploads your public key, pins the server's host keys in a known_hosts "
        "file of its own, stores the token in a mode-600 file and writes a marked Host "
        "block into ~/.ssh/config (updated in place when run again).",
    )
    configure.add_argument("url", help="the Jupyter server's URL")
    configure.add_argument("--name", help="the Host name (default: from the URL)")
    configure.add_argument(
        "--identity", help="private key to use (default: ~/.ssh/id_ed25519, made if missing)"
    )
    configure.add_argument("--token-file", help="file holding the token (mode 600)")
    configure.add_argument("--ca-file", help=CA_FILE_HELP + "; written into the ProxyCommand")
    configure.add_argument("--ssh-config", help="ssh config file to edit (default: ~/.ssh/config)")
    configure.add_argument(
        "--host-key-checking",
        choices=["yes", "accept-new"],
        default="yes",
        help="StrictHostKeyChecking for the block (default: yes)",
    )
    configure.add_argument(
        "--no-connection-sharing",
        dest="connection_sharing",
        action="store_false",
        help="do not share one connection between ssh sessions (ControlMaster); by "
        "default later sessions reuse the first one's connection for 10 minutes",
    )
    configure.add_argument(
        "--dry-run", action="store_true", help="print the changes; write nothing"
    )

    doctor = commands.add_parser(
        "doctor",
        help="check each link from here to the server's sshd, one verdict per line",
    )
    doctor.add_argument("url", help="the Jupyter server's URL")
    doctor.add_argument("--token-file", help="file holding the token (mode 600)")
    doctor.add_argument("--ca-file", help=CA_FILE_HELP)
    doctor.add_argument("--identity", help="private key to check (default: ~/.ssh/id_ed25519)")
    doctor.add_argument("--ssh-config", help="ssh config config-ssh wrote (default: ~/.ssh/config)")
    doctor.add_argument("--name", help="the Host name given to config-ssh (default: from the URL)")

    commands.add_parser(
        "settings",
        help="print the server-side settings (c.SSHDProxy.*), their variables and defaults",
        description="Every c.SSHDProxy setting of the Jupyter server, with the "
        "JUPYTER_SSHD_PROXY_* variable that also sets it and its default.",
    )

    demo = commands.add_parser(
        "demo",
        help="start a local Jupyter server with the sshd proxy and ssh into it",
        description="Starts a Jupyter server on 127.0.0.1 with a throwaway token and "
        "key, then runs ssh through the proxy. Everything is removed afterwards.",
    )
    demo.add_argument("ssh_command", nargs="*", help="a command to run instead of a shell")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a failure is one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except SSHDProxyError as error:
        from .client.untrusted import printable

        # Parts of the message may come from the server: never an escape sequence.
        print(f"jupyter-sshd-proxy: {printable(error, 2000)}", file=sys.stderr)
        # ssh reports a ProxyCommand's failure as its own exit status, 255.
        return 255 if args.command == "proxy" else 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "proxy":
        from .client.proxy_command import main_proxy

        return main_proxy(
            args.url, args.token_file, args.ping_interval or None, args.start, args.ca_file
        )
    if args.command == "config-ssh":
        from .client.config_ssh import main_config_ssh

        return main_config_ssh(args)
    if args.command == "doctor":
        from .client.doctor import main_doctor

        return main_doctor(args)
    if args.command == "settings":
        from .settings import settings_help

        print(settings_help())
        return 0
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.ssh_command)
    return 2


if __name__ == "__main__":
    sys.exit(main())
