"""Every exception jupyter-sshd-proxy raises on purpose.

Each message is one line that says what failed, with which value, and how to
fix it; it never contains a token. The command line catches SSHDProxyError
once (cli.main) and prints that line.

SSHDProxyError
├── ConfigError          a setting (trait or environment variable) is invalid;
│                        also a ValueError, so traitlets reports a bad value
├── PreflightError       sshd cannot be started as configured
├── BadKeyError          a public key line is not acceptable (also a ValueError)
├── FileEditError        a file cannot be edited safely (a symlink loop, a lock)
└── ClientError          the laptop side
    ├── BadURLError      the URL is not a Jupyter server URL (also a ValueError)
    ├── APIError         a REST call to the server failed
    ├── UntrustedAnswer  the server answered something we refuse to use
    ├── TLSError         the server's certificate cannot be verified, or --ca-file read
    ├── ProxyError       the ProxyCommand cannot connect (exit status 255)
    │   └── ServerNotRunning   the Hub says the user's server is not running
    ├── ConfigSSHError   config-ssh cannot go on; nothing was written
    ├── HubError         the Hub refused, or could not do, what we asked of it
    └── CheckFailed      one link checked by `doctor` is broken
"""

from __future__ import annotations


class SSHDProxyError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SSHDProxyError, ValueError):
    """A configuration value (trait or environment variable) is invalid."""


class PreflightError(SSHDProxyError):
    """sshd cannot start; str(error) is one line naming the fix."""


class BadKeyError(SSHDProxyError, ValueError):
    """A public key line is not acceptable; str(error) says why."""


class FileEditError(SSHDProxyError):
    """A file cannot be replaced safely; str(error) says why and what to do."""


class ClientError(SSHDProxyError):
    """A failure on the laptop side, told to the user in one line."""


class BadURLError(ClientError, ValueError):
    """The URL is not a Jupyter server URL."""


class APIError(ClientError):
    """A REST call failed; str(error) is one line without the token."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class UntrustedAnswer(ClientError):
    """The server sent a value we will not write to a file or a command line."""


class TLSError(ClientError):
    """The server's certificate cannot be verified, or the CA file cannot be read."""


class ProxyError(ClientError):
    """The ProxyCommand cannot carry the connection (exit status 255, as ssh's);
    status is the HTTP status of a refused WebSocket handshake, if that is why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerNotRunning(ProxyError):
    """The Hub answered for the user's server: it is not running."""


class ConfigSSHError(ClientError):
    """config-ssh cannot go on; nothing has been written."""


class HubError(ClientError):
    """The Hub refused, or could not do, what we asked (a token, a start, a server)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class CheckFailed(ClientError):
    """A link checked by `doctor` is broken; the message says why and what to do."""
