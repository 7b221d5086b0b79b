"""The Host block the client writes, read back by OpenSSH's own `ssh -G`
(tests/unit/test_client_units.py has the rest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jupyter_sshd_proxy_client import ssh_files

from ..support.ssh_blocks import block


def ssh_g(tmp_path: Path, text: str) -> dict[str, str]:
    """What the real ssh makes of a config: `ssh -G` (it does not connect)."""
    config = tmp_path / "config"
    config.write_text(text)
    result = subprocess.run(
        ["ssh", "-G", "-F", str(config), "myhub"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=10,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def test_ssh_reads_paths_with_spaces_quotes_and_percents_as_they_are(tmp_path):
    home = "/home/o'brien #1/100% me"
    seen = ssh_g(tmp_path, block(home, url="https://h.org/user/a%2Bb/"))
    own = f"{home}/.ssh/jupyter-sshd-proxy"
    assert seen["user"] == "jovyan"
    assert seen["hostkeyalias"] == "myhub"
    assert seen["userknownhostsfile"] == f"{own}/known_hosts"
    assert seen["controlpath"].startswith(f"{own}/cm-")
    assert len(seen["controlpath"]) == len(own) + 4 + 40  # %C expanded, the rest as it is
    # ssh expands % in these two when it uses them: -G shows them still escaped.
    assert seen["identityfile"] == f"{home}/.ssh/id_ed25519".replace("%", "%%")
    assert seen["proxycommand"] == (
        "/usr/bin/python3 -m jupyter_sshd_proxy_client proxy --token-file "
        "'/home/o'\"'\"'brien #1/100%% me/.ssh/jupyter-sshd-proxy/myhub.token' "
        "https://h.org/user/a%%2Bb/"
    )


def test_the_block_on_top_wins_and_global_options_still_apply_to_all(tmp_path):
    """ssh takes the first value of each option: an earlier `Host *` would void the
    pinning. The block ends with `Host *`, so the options that began the file
    (before the user's first Host) still apply to every host."""
    config = (
        "ForwardAgent yes\n"
        "ServerAliveInterval 42\n"
        "Host *\n"
        "    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n"
    )
    text = ssh_files.put_block(config, "myhub", block())
    seen = ssh_g(tmp_path, text)
    assert seen["stricthostkeychecking"] == "true"
    assert seen["userknownhostsfile"] == "/home/me/.ssh/jupyter-sshd-proxy/known_hosts"
    assert seen["forwardagent"] == "no"
    assert seen["serveraliveinterval"] == "42"
    (tmp_path / "config").write_text(text)
    other = subprocess.run(
        ["ssh", "-G", "-F", str(tmp_path / "config"), "other"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    assert "\nforwardagent yes\n" in other
    assert "\nserveraliveinterval 42\n" in other
