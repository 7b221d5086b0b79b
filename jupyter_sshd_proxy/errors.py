"""The exceptions jupyter-sshd-proxy raises.

SSHDProxyError
└── PreflightError     sshd cannot be started as configured; the message says
                       what is wrong and how to fix it, in one line.
BadKeyError            a public key line is not acceptable (also a ValueError).
ConfigError            a configuration value is invalid (also a ValueError, so
                       traitlets reports it as a bad trait value).
"""


class SSHDProxyError(Exception):
    """Base class of every error this package raises on purpose."""


class PreflightError(SSHDProxyError):
    """sshd cannot start; str(error) is one line naming the fix."""


class BadKeyError(SSHDProxyError, ValueError):
    """A public key line is not acceptable; str(error) says why."""


class ConfigError(SSHDProxyError, ValueError):
    """A configuration value (trait or environment variable) is invalid."""
