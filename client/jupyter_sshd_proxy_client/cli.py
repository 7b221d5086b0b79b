"""jupyter-sshd-proxy: the command line.

jupyter-sshd-proxy proxy URL       the ssh ProxyCommand
jupyter-sshd-proxy config-ssh URL  make `ssh NAME` work, with the host key pinned
                                   (with a Hub's URL: `ssh NAME.SERVER` for each server)
jupyter-sshd-proxy servers URL     a Hub's servers: state, last activity, SSH ready
jupyter-sshd-proxy doctor URL      check each link from here to sshd
jupyter-sshd-proxy settings        the server-side settings, their variables and defaults
jupyter-sshd-proxy demo            a local Jupyter server and an ssh session into it

This module is the client's (jupyter-sshd-proxy-client). settings and demo
need the server's distribution (jupyter-sshd-proxy), which brings this one
with it; where only the client is installed they say so in one line.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from . import __version__
from .errors import ClientError, ProxyError, SSHDProxyError

if TYPE_CHECKING:  # argparse is imported by build_parser(): python -m's proxy does without
    import argparse
    from types import ModuleType

CA_FILE_HELP = (
    "PEM file with the CA certificate that signed the server's certificate (a Hub with "
    "a private CA); only that CA is trusted then. Default: the system's, or $SSL_CERT_FILE"
)


def build_parser() -> argparse.ArgumentParser:
    import argparse

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
        "url",
        help="the Jupyter server's URL, e.g. https://hub.example.org/user/NAME/ (with "
        "--user: the Hub's URL)",
    )
    proxy.add_argument(
        "host",
        nargs="?",
        help="with --user: the host name ssh was given (%%n): NAME or NAME.SERVER",
    )
    proxy.add_argument(
        "--user", help="the Hub user whose servers these are (config-ssh's Hub block)"
    )
    proxy.add_argument("--name", help="with --user: the NAME of config-ssh --name")
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
    configure.add_argument(
        "url",
        help="the Jupyter server's URL, or the Hub's (https://hub.example.org/) for every "
        "server of the token's user: `ssh NAME` and `ssh NAME.SERVER`",
    )
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
    configure.add_argument(
        "--start",
        action="store_true",
        help="with a Hub's URL: `ssh NAME.SERVER` starts a stopped server (the stored "
        "token may then start the user's servers too)",
    )
    configure.add_argument(
        "--token-expires-in",
        metavar="TIME",
        help="with a Hub's URL: how long the token stored for ssh lives, like 30d, 12h, "
        "90m (default: 30d)",
    )
    configure.add_argument(
        "--store-pasted-token",
        action="store_true",
        help="with a Hub's URL: store the token given instead of one the Hub makes for "
        "ssh alone (for a Hub that cannot make one)",
    )

    certificate = commands.add_parser(
        "certificate",
        help="renew the SSH certificate from the Hub's certificate authority when due "
        "(config-ssh's Match line runs it before each connection)",
    )
    certificate.add_argument("url", help="the Hub's URL")
    certificate.add_argument("--token-file", required=True, help="file holding the token")
    certificate.add_argument("--user", required=True, help="the Hub user the certificate names")
    certificate.add_argument("--identity", required=True, help="the private key certified")
    certificate.add_argument("--certificate", required=True, help="where the certificate is")
    certificate.add_argument("--ca-file", help=CA_FILE_HELP)
    certificate.add_argument("--service", default="ssh-ca", help="the authority's service name")

    servers = commands.add_parser(
        "servers",
        help="list a Hub user's servers: the name to ssh to, state, last activity, SSH ready",
        description="The token is the one config-ssh stored for this Hub, or "
        "$JUPYTER_SSHD_PROXY_TOKEN, or --token-file.",
    )
    servers.add_argument("url", help="the Hub's URL, e.g. https://hub.example.org/")
    servers.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    servers.add_argument(
        "--name", help="config-ssh's --name for this Hub (default: the one stored)"
    )
    servers.add_argument("--token-file", help="file holding the token (mode 600)")
    servers.add_argument("--ca-file", help=CA_FILE_HELP)
    servers.add_argument(
        "--ssh-config", help="ssh config config-ssh wrote (default: ~/.ssh/config)"
    )

    known = commands.add_parser(
        "known-hosts",
        help="ssh's KnownHostsCommand in config-ssh's Hub block (pins a server on first use)",
    )
    known.add_argument("url", help="the Hub's URL")
    known.add_argument("host", help="the host name ssh was given (%%n)")
    known.add_argument("reason", help="why ssh asks (%%I): ORDER, HOSTNAME or ADDRESS")
    known.add_argument("known_name", help="the name ssh looks up (%%H)")
    known.add_argument("--token-file", required=True)
    known.add_argument("--ca-file")
    known.add_argument("--user", required=True)
    known.add_argument("--name", required=True)
    known.add_argument("--known-hosts", required=True)
    known.add_argument(
        "--identity",
        help="authorize this key's public half on first use (none: the Hub's certificate "
        "authority vouches for the laptop)",
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
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run one parsed command (from main(), or from __main__ with the proxy
    command's args as preconnect.parse() took them)."""
    # ssh reports a ProxyCommand's failure as its own exit status, 255.
    failed = 255 if args.command == "proxy" else 1
    try:
        return _run(args)
    except SSHDProxyError as error:
        # Parts of the message may come from the server: never an escape sequence.
        _say(args, str(error))
        return failed
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the last guard: still one line, still no token
        from .untrusted import printable

        what = printable(f"{type(error).__name__}: {error}", 300)
        _say(args, f"{what}; this is a bug in jupyter-sshd-proxy; please report it")
        return failed


def _say(args: argparse.Namespace, message: str) -> None:
    """One line for the user, made printable (no escape sequence, no token)."""
    from .untrusted import printable

    line = f"jupyter-sshd-proxy: {printable(message, 2000)}"
    if args.command == "proxy":
        from .proxy_command import tell_user  # the terminal, when ssh hides stderr

        tell_user(line)
    else:
        print(line, file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if args.command == "proxy":
        from .startup import pause

        pause()  # no garbage collection until the WebSocket is open
        from .proxy_command import main_proxy

        hub = None
        if args.user is not None or args.host is not None:
            if not (args.user and args.name and args.host):
                msg = "a Hub's ProxyCommand needs --user, --name and the host name (%n)"
                raise ProxyError(msg)
            from .hub_connect import HubTarget

            hub = HubTarget(
                args.url, args.user, args.name, args.host, args.token_file, args.ca_file, args.start
            )
        return main_proxy(
            args.url, args.token_file, args.ping_interval or None, args.start, args.ca_file, hub
        )
    if args.command == "known-hosts":
        from .known_hosts_command import known_hosts

        return known_hosts(args)
    if args.command == "certificate":
        from .certificates import main_certificate

        return main_certificate(args)
    if args.command == "servers":
        from .servers import main_servers

        return main_servers(args)
    if args.command == "config-ssh":
        from .config_ssh import main_config_ssh

        return main_config_ssh(args)
    if args.command == "doctor":
        from .doctor import main_doctor

        return main_doctor(args)
    if args.command == "settings":
        print(server_side("settings", args.command).settings_help())
        return 0
    if args.command == "demo":
        status: int = server_side("demo", args.command).run_demo(args.ssh_command)
        return status
    return 2


def server_side(module: str, command: str) -> ModuleType:
    """jupyter_sshd_proxy.module, from the server's distribution; a ClientError
    naming what to install where only the client is installed."""
    try:
        return importlib.import_module(f"jupyter_sshd_proxy.{module}")
    except ModuleNotFoundError as error:
        if error.name != "jupyter_sshd_proxy":
            raise
    msg = (
        f"`jupyter-sshd-proxy {command}` needs the server side, and only the client is "
        "installed here: install jupyter-sshd-proxy (from a checkout: pip install ./client .)"
    )
    raise ClientError(msg)


if __name__ == "__main__":
    sys.exit(main())
