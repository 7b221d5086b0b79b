"""A Host block as config-ssh writes it, for the unit tests of its text and
the e2e tests that have OpenSSH's own ssh read it back."""

from __future__ import annotations

from jupyter_sshd_proxy_client import ssh_files

BASE = "https://hub.example.org/user/alice/"


def block(home: str = "/home/me", sharing: bool = True, url: str = BASE) -> str:
    own = f"{home}/.ssh/jupyter-sshd-proxy"
    return ssh_files.render_block(
        name="myhub",
        user="jovyan",
        proxy_argv=[
            "/usr/bin/python3",
            "-m",
            "jupyter_sshd_proxy_client",
            "proxy",
            "--token-file",
            f"{own}/myhub.token",
            url,
        ],
        identity_file=f"{home}/.ssh/id_ed25519",
        known_hosts=f"{own}/known_hosts",
        control_dir=own if sharing else None,
    )
