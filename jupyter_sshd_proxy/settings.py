"""SSHDProxy: every server-side setting, in one place.

Each setting comes from, in order: the Jupyter config (``c.SSHDProxy.x`` in
jupyter_server_config.py, or ``--SSHDProxy.x=...`` on the command line), then
its ``JUPYTER_SSHD_PROXY_*`` environment variable, then the trait's static
default (which the generated help and the settings table of
docs/configuration.md print). The variables are read once, when the settings
object is made (the server extension makes one when it loads), never at
import, and every value is checked then: a bad one fails loudly with the
value and the fix, never later inside a request.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Callable

from traitlets import Bool, Float, Int, List, TraitType, Unicode, validate
from traitlets.config import LoggingConfigurable

from jupyter_sshd_proxy_client.errors import ConfigError

from .activity import POLICIES

if TYPE_CHECKING:
    from traitlets.utils.bunch import Bunch

ENV_PREFIX = "JUPYTER_SSHD_PROXY_"
# What ssh may do on a server (c.SSHDProxy.policy). "off" turns SSH off.
SSH_POLICIES = ("all", "no-forwarding", "sftp-only", "off")
# The extra options each policy that limits ssh leaves to sshd's defaults no more.
POLICY_KEYWORDS = {
    "no-forwarding": frozenset(
        (
            "allowtcpforwarding",
            "allowstreamlocalforwarding",
            "allowagentforwarding",
            "disableforwarding",
            "permitopen",
            "permitlisten",
            "x11forwarding",
        )
    ),
}
POLICY_KEYWORDS["sftp-only"] = POLICY_KEYWORDS["no-forwarding"] | {
    "forcecommand",
    "permittty",
    "permituserrc",
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
SSHD_LOG_LEVELS = (
    "QUIET",
    "FATAL",
    "ERROR",
    "INFO",
    "VERBOSE",
    "DEBUG",
    "DEBUG1",
    "DEBUG2",
    "DEBUG3",
)

# Options that make sshd safe to expose through the Jupyter server; extra
# options may not change them. Named in the refusal, for a clearer message.
PROTECTED_SSHD_OPTIONS = frozenset(
    option.lower()
    for option in (
        "ListenAddress",
        "Port",
        "AddressFamily",
        "HostKey",
        "PidFile",
        "AuthenticationMethods",
        "PubkeyAuthentication",
        "PasswordAuthentication",
        "KbdInteractiveAuthentication",
        "ChallengeResponseAuthentication",
        "HostbasedAuthentication",
        "GSSAPIAuthentication",
        "KerberosAuthentication",
        "PermitEmptyPasswords",
        "UsePAM",
        "AllowUsers",
        "PermitRootLogin",
        "AuthorizedKeysFile",
        "StrictModes",
        "SetEnv",
    )
)

# What AcceptEnv may name: variables a client may set in its session. Only
# these, because a client that may set BASH_ENV, ENV, LD_PRELOAD, PATH, ...
# runs any command, even with a key limited by command="..." or ForceCommand
# (the user's shell reads them before the forced command runs); a pattern
# with wildcards matches those too.
ACCEPT_ENV_PATTERN = re.compile(r"LANG|LC_\*|LC_[A-Z]+(?:_[A-Z]+)*|TZ|COLORTERM")

# The only keywords extra_options may set (an allow-list: a new or forgotten
# keyword is refused, not let through). Each changes how sessions, forwarding,
# time-outs or logging behave, never who may log in, how they prove it, or
# where sshd listens. Left out on purpose, among others: Include and Match
# (they can reopen everything), AuthorizedKeysCommand, AuthorizedPrincipals*,
# TrustedUserCAKeys, RevokedKeys, HostCertificate (other ways in),
# PubkeyAcceptedAlgorithms, CASignatureAlgorithms, RequiredRSASize, Ciphers,
# MACs, KexAlgorithms (weaker keys and crypto), GatewayPorts and
# X11UseLocalhost (forwarded ports on every interface), PermitUserEnvironment,
# ChrootDirectory, PermitTunnel, Banner, AllowGroups/DenyUsers/DenyGroups.
ALLOWED_SSHD_OPTIONS = {
    option.lower(): option
    for option in (
        # connections and time-outs
        "ClientAliveInterval",
        "ClientAliveCountMax",
        "TCPKeepAlive",
        "LoginGraceTime",
        "MaxAuthTries",
        "MaxSessions",
        "ChannelTimeout",
        "UnusedConnectionTimeout",
        "RekeyLimit",
        "Compression",
        "IPQoS",
        "UseDNS",
        # forwarding (forwarded ports stay on loopback: GatewayPorts is not here)
        "AllowTcpForwarding",
        "AllowStreamLocalForwarding",
        "AllowAgentForwarding",
        "DisableForwarding",
        "PermitOpen",
        "PermitListen",
        "StreamLocalBindMask",
        "StreamLocalBindUnlink",
        "X11Forwarding",
        "X11DisplayOffset",
        # sessions
        "Subsystem",
        "ForceCommand",
        "AcceptEnv",
        "PermitTTY",
        "PermitUserRC",
        "ExposeAuthInfo",
        "PrintMotd",
        "PrintLastLog",
        # logging
        "LogLevel",
        "LogVerbose",
        "SyslogFacility",
        "FingerprintHash",
    )
}


def env_name(trait_name: str) -> str:
    """The environment variable that sets a trait: sshd_path -> JUPYTER_SSHD_PROXY_SSHD_PATH."""
    return ENV_PREFIX + trait_name.upper()


def parse_bool(text: str, source: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    msg = (
        f"{source}={text!r} is not a boolean; use one of "
        f"{', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}"
    )
    raise ConfigError(msg)


def split_extra_options(text: str) -> list[str]:
    """Extra sshd options from the environment: one option per line or per ';'."""
    return [part.strip() for part in re.split(r"[;\n]", text) if part.strip()]


def split_paths(text: str) -> list[str]:
    """Paths from the environment, separated by ':' as in PATH."""
    return [part for part in text.split(":") if part]


def split_keys_file_words(text: str) -> list[str]:
    """Paths as sshd's AuthorizedKeysFile reads them (and the original
    jupyter-sshd-proxy passed its variable to it): separated by white space,
    each relative to the home directory unless it is absolute."""
    return [word if word.startswith(("/", "~", "%h")) else "~/" + word for word in text.split()]


class SSHDProxy(LoggingConfigurable):
    """Settings of the per-user sshd behind the /sshd/ WebSocket route."""

    policy = Unicode(
        "all",
        help="""What ssh may do on this server: "all" (a shell, commands, file
        transfer and forwarding, as with any sshd); "no-forwarding" (the same
        without forwarding of any kind: TCP ports and unix sockets either way
        with -L, -R and -D, the agent, X11); "sftp-only" (sftp, scp -s and
        OpenSSH 9's scp, nothing else: a shell, a command, rsync or a terminal
        gets sshd's "This service allows sftp connections only."); or "off":
        SSH is off. Then the /sshd/ route refuses every connection with that
        reason (403), no sshd is ever started, the launcher has no SSH tile, and
        the page and the status endpoint say that SSH is off; managing keys
        still works. A policy limits what ssh offers, not what the user can
        do: whoever may run code on the server can do as much without ssh. Set
        the variable per profile (KubeSpawner's environment) to give some users
        less, or none. (Disabling the server extension, `jupyter server
        extension disable jupyter_sshd_proxy`, also means that no sshd starts:
        the route is then not guarded.) Environment variable:
        JUPYTER_SSHD_PROXY_POLICY.""",
    ).tag(config=True)

    sshd_path = Unicode(
        "",
        help="""Path of the OpenSSH sshd program. Empty: look for sshd on PATH, then
        in /usr/sbin, /usr/local/sbin and /sbin. Environment variable:
        JUPYTER_SSHD_PROXY_SSHD_PATH.""",
    ).tag(config=True)

    ssh_keygen_path = Unicode(
        "",
        help="""Path of ssh-keygen, used once to make the host keys. Empty: look for it
        on PATH and next to sshd. Environment variable:
        JUPYTER_SSHD_PROXY_SSH_KEYGEN_PATH.""",
    ).tag(config=True)

    host_key_dir = Unicode(
        "",
        help="""Directory that keeps this user's sshd host keys (ed25519 and RSA), made
        on first use and reused afterwards, so a restarted server keeps its host
        key. Empty: <Jupyter data dir>/sshd_proxy/host_keys (usually
        ~/.local/share/jupyter/sshd_proxy/host_keys). Environment variable:
        JUPYTER_SSHD_PROXY_HOST_KEY_DIR.""",
    ).tag(config=True)

    legacy_host_key = Unicode(
        "~/.ssh/jupyter_sshd_hostkey",
        help="""The host key of the original jupyter-sshd-proxy (0.3.0), which it made
        on its first start. Where it exists, it is sshd's first host key, which
        sshd presents before this package's key of the same type, so that
        clients that pinned it still connect; ssh's UpdateHostKeys teaches them
        the others, and the host-keys API serves it, so config-ssh pins it
        too. It is never made. A leading ~ is $HOME, where the original put it. Empty
        (or none): never present it, to retire it once clients know the new
        keys (see docs/upgrading.md). Environment variable:
        JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY.""",
    ).tag(config=True)

    authorized_keys_files = List(
        Unicode(),
        default_value=["~/.ssh/authorized_keys", "~/.ssh/authorized_keys2"],
        help="""The files sshd reads public keys from (by default, sshd's own). The
        API and the page list and remove keys in every file, and add a key to
        the first. A leading ~ is the user's home; sshd's own %h (home) and %u
        (user name) tokens work too. A path may not hold white space, quotes
        or backslashes, which sshd_config reads as separators or quoting. In
        the environment variable, separate paths with ':'. When it is not set,
        the original jupyter-sshd-proxy's JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH
        is read instead, as sshd reads AuthorizedKeysFile: paths separated by
        spaces, each relative to the home directory unless it is absolute.
        Environment variable: JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES.""",
    ).tag(
        config=True,
        from_text=split_paths,
        original_variable=("JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH", split_keys_file_words),
    )

    log_level = Unicode(
        "INFO",
        help="""sshd's LogLevel: QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG (which is
        DEBUG1) or DEBUG1-3, in any case. sshd logs into the Jupyter server's
        log. The login counts on /metrics and the keys in the audit events come
        from its INFO lines: below INFO they are not known. Environment variable:
        JUPYTER_SSHD_PROXY_LOG_LEVEL.""",
    ).tag(config=True)

    extra_options = List(
        Unicode(),
        default_value=[],
        help="""More sshd_config lines, such as "LoginGraceTime 60" or
        "MaxSessions 20". They replace this package's default for the same
        keyword. Only options that cannot weaken authentication, the listen
        address or the user are accepted (time-outs, forwarding, sessions,
        logging; a refusal lists them). AcceptEnv may name only LANG, LC_* (or
        one LC_ name), TZ and COLORTERM: a client that may set other variables
        (BASH_ENV, LD_PRELOAD, ...) could escape a forced command. In the
        environment variable, separate options with ';' or newlines.
        Environment variable:
        JUPYTER_SSHD_PROXY_EXTRA_OPTIONS.""",
    ).tag(config=True, from_text=split_extra_options)

    pass_environment = Bool(
        True,
        help="""Give ssh sessions the Jupyter server's environment (PATH with the conda
        or venv bin, JUPYTERHUB_* and the rest), as a notebook terminal has it. The
        variable takes 1/0, true/false, yes/no or on/off. Environment variable:
        JUPYTER_SSHD_PROXY_PASS_ENVIRONMENT.""",
    ).tag(config=True)

    start_timeout = Float(
        10.0,
        help="""Seconds to wait for sshd to accept connections after it is started.
        Environment variable: JUPYTER_SSHD_PROXY_START_TIMEOUT.""",
    ).tag(config=True, unit="seconds")

    activity = Unicode(
        "traffic",
        help="""What SSH use counts as activity of the server, for JupyterHub's idle
        culler: "traffic" (bytes through an SSH connection; WebSocket keepalive
        pings do not count), "connections" (an open SSH connection counts, for at
        most activity_connection_hours after it opened) or "off". Environment
        variable: JUPYTER_SSHD_PROXY_ACTIVITY.""",
    ).tag(config=True)

    activity_connection_hours = Float(
        8.0,
        help="""With activity = "connections": for how many hours an open SSH
        connection keeps the server from being culled. Environment variable:
        JUPYTER_SSHD_PROXY_ACTIVITY_CONNECTION_HOURS.""",
    ).tag(config=True, unit="hours")

    activity_poll_seconds = Float(
        30.0,
        help="""How often sshd's connections are looked at for activity, in seconds.
        Environment variable: JUPYTER_SSHD_PROXY_ACTIVITY_POLL_SECONDS.""",
    ).tag(config=True, unit="seconds")

    # How much the connections of clients that never log in may hold.

    max_unauthenticated = Int(
        32,
        help="""How many SSH connections may be waiting to log in at once. Each runs
        an sshd (about 1.5 MiB) until it logs in, or until sshd's LoginGraceTime
        (30 s; extra_options can change it) is over. As many more wait for their
        turn, without an sshd, for at most as long; more are closed at once.
        Environment variable: JUPYTER_SSHD_PROXY_MAX_UNAUTHENTICATED.""",
    ).tag(config=True, unit="connections")

    max_relays = Int(
        16,
        help="""How many SSH connections at once are relayed by a process of their
        own (about 2.4 MiB each) instead of the Jupyter server: the bytes of
        those do not pass through the event loop that serves notebooks, and
        parallel transfers use as many cores. Connections past this number, and
        every connection when it is 0 or when the Jupyter server itself is
        served over TLS, are relayed by the Jupyter server. Environment
        variable: JUPYTER_SSHD_PROXY_MAX_RELAYS.""",
    ).tag(config=True, unit="connections")

    trusted_user_ca_keys = Unicode(
        "",
        help="""Trust SSH user certificates from the Hub's certificate authority
        (docs/certificates.md), for this server's Hub user only: the URL of the
        authority's keys endpoint (such as
        http://hub:8765/services/ssh-ca/keys), fetched whenever sshd is
        prepared, or the path of a file of its public keys (a mounted
        ConfigMap). sshd then takes a certificate signed by one of those keys
        whose principal is hub:<JUPYTERHUB_USER>, besides the keys in
        authorized_keys; the policy applies to both. When the keys cannot be
        fetched or are not valid public keys, certificates are not trusted
        (one log line; the status API says why) and authorized_keys still
        work. Empty: no certificates. Environment variable:
        JUPYTER_SSHD_PROXY_TRUSTED_USER_CA_KEYS.""",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        # Where each value came from, for error messages: the trait, or its variable.
        self._sources: dict[str, str] = {}
        super().__init__(**kwargs)
        configured = set(kwargs) | set(self.config.get(type(self).__name__, {}))
        for name, trait in self.traits(config=True).items():
            if name in configured:
                continue
            found = [
                (variable, parse)
                for variable, parse in variables_of(name, trait)
                if os.environ.get(variable, "").strip()
            ]
            if not found:
                continue
            variable, parse = found[0]
            value = parse(os.environ[variable], variable)
            for other, other_parse in found[1:]:
                if other_parse(os.environ[other], other) != value:
                    msg = (
                        f"{variable}={os.environ[variable]!r} and {other}="
                        f"{os.environ[other]!r} disagree; set only {variable}"
                    )
                    raise ConfigError(msg)
            self._sources[name] = variable
            setattr(self, name, value)

    def source(self, name: str) -> str:
        """How the user names where a setting's value came from."""
        return self._sources.get(name, f"SSHDProxy.{name}")

    @validate(
        "start_timeout",
        "activity_connection_hours",
        "activity_poll_seconds",
        "max_unauthenticated",
    )
    def _validate_positive(self, proposal: Bunch) -> float:
        return self._checked_count(proposal, zero_allowed=False)

    @validate("max_relays")
    def _validate_not_negative(self, proposal: Bunch) -> float:
        return self._checked_count(proposal, zero_allowed=True)

    def _checked_count(self, proposal: Bunch, zero_allowed: bool) -> float:
        trait = proposal.trait
        value: float = proposal.value
        if not (value >= 0 if zero_allowed else value > 0):
            what = "zero or a positive number" if zero_allowed else "a positive number"
            msg = (
                f"{self.source(trait.name)}={value!r} is not {what} of "
                f"{trait.metadata['unit']}; use e.g. {trait.default_value:g}"
            )
            raise ConfigError(msg)
        return value

    @validate("policy")
    def _validate_policy(self, proposal: Bunch) -> str:
        policy = check_policy(proposal.value, self.source("policy"))
        check_policy_options(policy, self.extra_options, self.source("extra_options"))
        return policy

    @validate("activity")
    def _validate_activity(self, proposal: Bunch) -> str:
        return check_activity(proposal.value, self.source("activity"))

    @validate("log_level")
    def _validate_log_level(self, proposal: Bunch) -> str:
        return check_log_level(proposal.value, self.source("log_level"))

    @validate("authorized_keys_files")
    def _validate_authorized_keys_files(self, proposal: Bunch) -> list[str]:
        return check_authorized_keys_files(proposal.value, self.source("authorized_keys_files"))

    @validate("legacy_host_key")
    def _validate_legacy_host_key(self, proposal: Bunch) -> str:
        return check_legacy_host_key(proposal.value, self.source("legacy_host_key"))

    @validate("trusted_user_ca_keys")
    def _validate_trusted_user_ca_keys(self, proposal: Bunch) -> str:
        return check_trusted_user_ca_keys(proposal.value, self.source("trusted_user_ca_keys"))

    @validate("extra_options")
    def _validate_extra_options(self, proposal: Bunch) -> list[str]:
        options = check_extra_options(proposal.value, self.source("extra_options"))
        check_policy_options(self.policy, options, self.source("extra_options"))
        return options


def variables_of(
    name: str, trait: TraitType[Any, Any]
) -> list[tuple[str, Callable[[str, str], Any]]]:
    """The environment variables that set a trait, the first one winning, each
    with what reads its text: its own, then the original jupyter-sshd-proxy's."""
    found: list[tuple[str, Callable[[str, str], Any]]] = [
        (env_name(name), lambda text, source: from_text(trait, text, source))
    ]
    if "original_variable" in trait.metadata:
        variable, split = trait.metadata["original_variable"]
        found.append((variable, lambda text, source: split(text)))
    return found


def from_text(trait: TraitType[Any, Any], text: str, source: str) -> Any:
    """A trait's value from its environment variable's text."""
    if isinstance(trait, Bool):
        return parse_bool(text, source)
    if isinstance(trait, (Float, Int)):
        whole = isinstance(trait, Int)
        try:
            return int(text) if whole else float(text)
        except ValueError:
            number = "positive whole number" if whole else "positive number"
            msg = (
                f"{source}={text!r} is not a {number} of {trait.metadata['unit']}; "
                f"use e.g. {trait.default_value:g}"
            )
            raise ConfigError(msg) from None
    if isinstance(trait, List):
        return trait.metadata["from_text"](text)
    return text


def check_policy(value: str, source: str) -> str:
    policy = value.strip().lower()
    if policy not in SSH_POLICIES:
        msg = (
            f"{source}={value!r} is not an SSH policy; use {', '.join(SSH_POLICIES)} "
            '("off" turns SSH off on this server)'
        )
        raise ConfigError(msg)
    return policy


def check_policy_options(policy: str, options: list[str], source: str) -> None:
    """Extra options may not set what the policy sets."""
    for line in options:
        keyword = line.split()[0]
        if keyword.lower() in POLICY_KEYWORDS.get(policy, ()):
            msg = (
                f"{source}: {keyword} is set by the policy {policy!r} "
                f"(c.SSHDProxy.policy / {env_name('policy')}); remove it, or use the "
                "policy 'all'"
            )
            raise ConfigError(msg)


def check_activity(value: str, source: str) -> str:
    policy = value.strip().lower()
    if policy not in POLICIES:
        msg = f"{source}={value!r} is not an activity policy; use traffic, connections or off"
        raise ConfigError(msg)
    return policy


def check_log_level(value: str, source: str) -> str:
    level = value.strip().upper()
    if level not in SSHD_LOG_LEVELS:
        msg = f"{source}={value!r} is not an sshd LogLevel; use one of {', '.join(SSHD_LOG_LEVELS)}"
        raise ConfigError(msg)
    return level


def check_authorized_keys_files(paths: list[str], source: str) -> list[str]:
    if not paths:
        msg = f"{source} is empty; name at least one file"
        raise ConfigError(msg)
    for path in paths:
        if not path.startswith(("/", "~", "%h")):
            msg = f"{source}: {path!r} is relative; use an absolute path, ~/... or %h/..."
            raise ConfigError(msg)
        if any(char.isspace() for char in path):
            msg = f"{source}: {path!r} contains white space, which sshd cannot read; rename it"
            raise ConfigError(msg)
        quoting = sorted({char for char in path if char in "\"'\\"})
        if quoting:
            msg = (
                f"{source}: {path!r} contains {' and '.join(quoting)}, which sshd_config reads "
                "as quoting, so sshd would read another file; rename it"
            )
            raise ConfigError(msg)
    return list(paths)


def check_legacy_host_key(path: str, source: str) -> str:
    if path.strip().lower() == "none":  # what a variable can say for ''
        return ""
    if path and not (path.startswith(("/", "~/")) and path.isprintable()):
        msg = (
            f"{source}={path!r} is not an absolute path or ~/...; "
            "use e.g. ~/.ssh/jupyter_sshd_hostkey, or none to never present it"
        )
        raise ConfigError(msg)
    return path


# Options of sshd's listener, which sshd -i (one sshd per connection) never has.
LISTENER_ONLY_SSHD_OPTIONS = frozenset(
    option.lower()
    for option in (
        "MaxStartups",
        "PerSourceMaxStartups",
        "PerSourceNetBlockSize",
        "PerSourcePenalties",
        "PerSourcePenaltyExemptList",
    )
)


def check_trusted_user_ca_keys(value: str, source: str) -> str:
    value = value.strip()
    if not value or value.startswith(("http://", "https://")):
        return value
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        msg = (
            f"{source}={value!r} is neither an http(s) URL nor an absolute path; give the "
            "authority's keys URL (https://HUB/services/ssh-ca/keys) or a key file's path"
        )
        raise ConfigError(msg)
    return path


def check_extra_options(lines: list[str], source: str) -> list[str]:
    """Each line as "Keyword value", with a keyword from ALLOWED_SSHD_OPTIONS.

    The keyword is read as sshd reads it (up to white space or "=", in any
    case) and written back in its usual spelling."""
    options = []
    for line in lines:
        line = line.strip()
        if any((ord(char) < 32 and char != "\t") or ord(char) == 127 for char in line):
            msg = (
                f"{source}: {line!r} holds a line break or another control character; "
                "give one option per item"
            )
            raise ConfigError(msg)
        match = re.fullmatch(r"([A-Za-z0-9]+)(?:[ \t]*=[ \t]*|[ \t]+)(.+)", line)
        if not match:
            msg = (
                f"{source}: {line!r} is not an sshd option; "
                'write "Keyword value", e.g. "MaxSessions 20"'
            )
            raise ConfigError(msg)
        keyword, value = match.group(1), match.group(2).strip()
        if keyword.lower() in LISTENER_ONLY_SSHD_OPTIONS:
            msg = (
                f"{source}: {keyword} has no effect: sshd runs once per connection "
                "(sshd -i); set c.SSHDProxy.max_unauthenticated instead"
            )
            raise ConfigError(msg)
        if keyword.lower() in PROTECTED_SSHD_OPTIONS:
            msg = (
                f"{source}: {keyword} cannot be changed, "
                "jupyter-sshd-proxy sets it to keep sshd safe; remove that option"
            )
            raise ConfigError(msg)
        if keyword.lower() not in ALLOWED_SSHD_OPTIONS:
            msg = (
                f"{source}: {keyword} is not allowed: only options that cannot weaken sshd's "
                f"authentication, listen address or user may be set "
                f"({', '.join(sorted(ALLOWED_SSHD_OPTIONS.values()))}); remove it"
            )
            raise ConfigError(msg)
        if keyword.lower() == "acceptenv":
            check_accept_env(value, source)
        options.append(f"{ALLOWED_SSHD_OPTIONS[keyword.lower()]} {value}")
    return options


def check_accept_env(value: str, source: str) -> None:
    """Each AcceptEnv pattern must be one of ACCEPT_ENV_PATTERN's."""
    for pattern in value.split():
        if not ACCEPT_ENV_PATTERN.fullmatch(pattern):
            msg = (
                f"{source}: AcceptEnv {pattern} is refused; AcceptEnv may name only LANG, "
                "LC_*, LC_<NAME>, TZ and COLORTERM, because a client that may set other "
                "variables (BASH_ENV, ENV, LD_PRELOAD, PATH, ...) runs any command, even "
                "past a forced command"
            )
            raise ConfigError(msg)


def config_table_markdown() -> str:
    """The settings table of docs/configuration.md, made from the traits themselves."""
    rows = [
        "| `c.SSHDProxy.` | environment variable | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for name, trait in sorted(SSHDProxy.class_traits(config=True).items()):
        help_text = " ".join(trait.help.split()).split(" Environment variable:")[0]
        default = trait.default_value_repr()
        rows.append(
            f"| `{name}` | `{env_name(name)}` | `{default}` | {help_text.replace('|', '/')} |"
        )
    return "\n".join(rows) + "\n"


def settings_help() -> str:
    """What `jupyter-sshd-proxy settings` prints: every setting with its default."""
    return SSHDProxy.class_get_help()
