"""SSHDProxy: every server-side setting, in one place.

Each setting comes from, in order: the Jupyter config (``c.SSHDProxy.x`` in
jupyter_server_config.py, or ``--SSHDProxy.x=...`` on the command line), then
its ``JUPYTER_SSHD_PROXY_*`` environment variable, then the default. Variables
are read when a value is first needed, never at import.
"""

from __future__ import annotations

import os
import re

from traitlets import Bool, Float, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .activity import POLICIES
from .errors import ConfigError

ENV_PREFIX = "JUPYTER_SSHD_PROXY_"
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

# Options that make sshd safe to expose through the Jupyter server. Extra
# options may not change them: the security model depends on them.
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


def env_name(trait_name: str) -> str:
    """The environment variable that sets a trait: sshd_path -> JUPYTER_SSHD_PROXY_SSHD_PATH."""
    return ENV_PREFIX + trait_name.upper()


def as_text(text: str, source: str) -> str:
    return text


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


def parse_positive(text: str, source: str, unit: str, example: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        msg = f"{source}={text!r} is not a positive number of {unit}; use e.g. {example}"
        raise ConfigError(msg)
    return value


def parse_seconds(text: str, source: str) -> float:
    return parse_positive(text, source, "seconds", "10")


def split_extra_options(text: str) -> list[str]:
    """Extra sshd options from the environment: one option per line or per ';'."""
    return [part.strip() for part in re.split(r"[;\n]", text) if part.strip()]


class SSHDProxy(LoggingConfigurable):
    """Settings of the per-user sshd behind the /sshd/ WebSocket route."""

    sshd_path = Unicode(
        help="""Path of the OpenSSH sshd program. Empty: look for sshd on PATH, then
        in /usr/sbin, /usr/local/sbin and /sbin. Environment variable:
        JUPYTER_SSHD_PROXY_SSHD_PATH.""",
    ).tag(config=True)

    ssh_keygen_path = Unicode(
        help="""Path of ssh-keygen, used once to make the host keys. Empty: look for it
        on PATH and next to sshd. Environment variable:
        JUPYTER_SSHD_PROXY_SSH_KEYGEN_PATH.""",
    ).tag(config=True)

    host_key_dir = Unicode(
        help="""Directory that keeps this user's sshd host keys (ed25519 and RSA), made
        on first use and reused afterwards, so a restarted server keeps its host
        key. Empty: <Jupyter data dir>/sshd_proxy/host_keys (usually
        ~/.local/share/jupyter/sshd_proxy/host_keys). Environment variable:
        JUPYTER_SSHD_PROXY_HOST_KEY_DIR.""",
    ).tag(config=True)

    authorized_keys_files = List(
        Unicode(),
        help="""The files sshd reads public keys from. A leading ~ is the user's home;
        sshd's own %h (home) and %u (user name) tokens work too. In the
        environment variable, separate paths with
        ':'. Default: ~/.ssh/authorized_keys. Environment variable:
        JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES.""",
    ).tag(config=True)

    log_level = Unicode(
        help="""sshd's LogLevel: QUIET, FATAL, ERROR, INFO, VERBOSE or DEBUG1-3. sshd
        logs into the Jupyter server's log. Default: INFO. Environment variable:
        JUPYTER_SSHD_PROXY_LOG_LEVEL.""",
    ).tag(config=True)

    extra_options = List(
        Unicode(),
        help="""More sshd_config lines, such as "ClientAliveInterval 30" or
        "MaxSessions 20". They replace this package's default for the same
        keyword; the options that make sshd safe (listen address, authentication,
        host keys, users) cannot be changed. In the environment variable, separate options with
        ';' or newlines. Environment variable: JUPYTER_SSHD_PROXY_EXTRA_OPTIONS.""",
    ).tag(config=True)

    pass_environment = Bool(
        help="""Give ssh sessions the Jupyter server's environment (PATH with the conda
        or venv bin, JUPYTERHUB_* and the rest), as a notebook terminal has it.
        Default: true; the variable takes 1/0, true/false, yes/no or on/off.
        Environment variable: JUPYTER_SSHD_PROXY_PASS_ENVIRONMENT.""",
    ).tag(config=True)

    start_timeout = Float(
        help="""Seconds to wait for sshd to accept connections after it is started.
        Default: 10. Environment variable: JUPYTER_SSHD_PROXY_START_TIMEOUT.""",
    ).tag(config=True)

    activity = Unicode(
        help="""What SSH use counts as activity of the server, for JupyterHub's idle
        culler: "traffic" (bytes through an SSH connection; WebSocket keepalive
        pings do not count), "connections" (an open SSH connection counts, for at
        most activity_connection_hours after it opened) or "off". Default:
        traffic. Environment variable: JUPYTER_SSHD_PROXY_ACTIVITY.""",
    ).tag(config=True)

    activity_connection_hours = Float(
        help="""With activity = "connections": for how many hours an open SSH
        connection keeps the server from being culled. Default: 8. Environment
        variable: JUPYTER_SSHD_PROXY_ACTIVITY_CONNECTION_HOURS.""",
    ).tag(config=True)

    activity_poll_seconds = Float(
        help="""How often sshd's connections are looked at for activity, in seconds.
        Default: 30. Environment variable: JUPYTER_SSHD_PROXY_ACTIVITY_POLL_SECONDS.""",
    ).tag(config=True)

    def _from_env(self, trait_name: str, parse, fallback):
        """The trait's environment variable through parse(text, variable name), or
        fallback when the variable is unset or blank."""
        text = os.environ.get(env_name(trait_name), "")
        if not text.strip():
            return fallback
        return parse(text, env_name(trait_name))

    @default("sshd_path")
    def _default_sshd_path(self):
        return self._from_env("sshd_path", as_text, "")

    @default("ssh_keygen_path")
    def _default_ssh_keygen_path(self):
        return self._from_env("ssh_keygen_path", as_text, "")

    @default("host_key_dir")
    def _default_host_key_dir(self):
        from jupyter_core.paths import jupyter_data_dir

        fallback = os.path.join(jupyter_data_dir(), "sshd_proxy", "host_keys")
        return self._from_env("host_key_dir", as_text, fallback)

    @default("authorized_keys_files")
    def _default_authorized_keys_files(self):
        def parse(text, source):
            return check_authorized_keys_files([p for p in text.split(":") if p], source)

        return self._from_env("authorized_keys_files", parse, ["~/.ssh/authorized_keys"])

    @default("log_level")
    def _default_log_level(self):
        return self._from_env("log_level", check_log_level, "INFO")

    @default("extra_options")
    def _default_extra_options(self):
        def parse(text, source):
            return check_extra_options(split_extra_options(text), source)

        return self._from_env("extra_options", parse, [])

    @default("pass_environment")
    def _default_pass_environment(self):
        return self._from_env("pass_environment", parse_bool, True)

    @default("start_timeout")
    def _default_start_timeout(self):
        return self._from_env("start_timeout", parse_seconds, 10.0)

    @default("activity")
    def _default_activity(self):
        return self._from_env("activity", check_activity, "traffic")

    @default("activity_connection_hours")
    def _default_activity_connection_hours(self):
        def parse(text, source):
            return parse_positive(text, source, "hours", "8")

        return self._from_env("activity_connection_hours", parse, 8.0)

    @default("activity_poll_seconds")
    def _default_activity_poll_seconds(self):
        return self._from_env("activity_poll_seconds", parse_seconds, 30.0)

    @validate("activity")
    def _validate_activity(self, proposal):
        return check_activity(proposal.value, "SSHDProxy.activity")

    # traitlets validates values set by config here; the defaults above check
    # the environment's values themselves, naming the variable.

    @validate("log_level")
    def _validate_log_level(self, proposal):
        return check_log_level(proposal.value, "SSHDProxy.log_level")

    @validate("authorized_keys_files")
    def _validate_authorized_keys_files(self, proposal):
        return check_authorized_keys_files(proposal.value, "SSHDProxy.authorized_keys_files")

    @validate("extra_options")
    def _validate_extra_options(self, proposal):
        return check_extra_options(proposal.value, "SSHDProxy.extra_options")


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
    return list(paths)


def check_extra_options(lines: list[str], source: str) -> list[str]:
    options = []
    for line in lines:
        line = line.strip()
        if "\n" in line or "\r" in line:
            msg = f"{source}: {line!r} spans lines; give one option per item"
            raise ConfigError(msg)
        keyword, _, value = line.partition(" ")
        if not keyword or not value.strip() or not re.fullmatch(r"[A-Za-z]+", keyword):
            msg = (
                f"{source}: {line!r} is not an sshd option; "
                'write "Keyword value", e.g. "ClientAliveInterval 30"'
            )
            raise ConfigError(msg)
        if keyword.lower() in PROTECTED_SSHD_OPTIONS:
            msg = (
                f"{source}: {keyword} cannot be changed, "
                "jupyter-sshd-proxy sets it to keep sshd safe; remove that option"
            )
            raise ConfigError(msg)
        if keyword.lower() == "match":
            msg = f"{source}: Match blocks are not supported; remove it"
            raise ConfigError(msg)
        options.append(f"{keyword} {value.strip()}")
    return options


def config_table_markdown() -> str:
    """The README's configuration table, made from the traits themselves."""
    rows = [
        "| `c.SSHDProxy.` | environment variable | what it does |",
        "| --- | --- | --- |",
    ]
    for name, trait in sorted(SSHDProxy.class_traits(config=True).items()):
        help_text = " ".join(trait.help.split())
        help_text = help_text.split(" Environment variable:")[0]
        rows.append(f"| `{name}` | `{env_name(name)}` | {help_text.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
