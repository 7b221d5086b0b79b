"""SSH into your Jupyter server through its authenticated WebSocket: the server side.

The laptop side (the `jupyter-sshd-proxy` command) is the distribution
jupyter-sshd-proxy-client, package jupyter_sshd_proxy_client, which this one
depends on and shares its errors, file writes and key grammar with.
"""

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_sshd_proxy.extension"}]
