"""SSH into your Jupyter server through its authenticated WebSocket.

Kept tiny on purpose: the client (`jupyter-sshd-proxy proxy`) runs on every ssh
connection, so importing this package must not pull in jupyter_server.
"""

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_sshd_proxy.extension"}]
