"""The Hub client's Host blocks and ssh version check against OpenSSH's own
ssh (tests/unit/test_hub_units.py has the rest)."""

from __future__ import annotations

import subprocess

from jupyter_sshd_proxy_client import ssh_files


def block(tmp_path, pinned_gpu: bool = True) -> str:
    stanzas = [
        ssh_files.HubStanza(["myhub"], "alice", True, "myhub"),
        ssh_files.HubStanza(["myhub.gpu"], "alice", pinned_gpu, "myhub.gpu"),
        ssh_files.HubStanza(
            ["myhub.*", "!myhub.gpu", *ssh_files.UNSAFE_TYPED_NAMES], "jovyan", False
        ),
    ]
    program = ["/usr/bin/python3", "-m", "jupyter_sshd_proxy_client"]
    return ssh_files.render_hub_block(
        name="myhub",
        description="alice's servers",
        stanzas=stanzas,
        proxy_argv=[*program, "proxy", "--user", "alice", "https://hub.example.org/"],
        known_hosts_argv=[*program, "known-hosts", "--known-hosts", str(tmp_path / "k h%")],
        identity_file=str(tmp_path / "id"),
        known_hosts=str(tmp_path / "known_hosts"),
    )


def ssh_g(config, host: str) -> dict[str, str]:
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), host],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value)
    return values


def test_each_name_falls_in_its_own_stanza(tmp_path):
    config = tmp_path / "config"
    config.write_text(block(tmp_path) + "Host *\n    User nobody\n")
    default, gpu, later = (ssh_g(config, h) for h in ("myhub", "myhub.gpu", "myhub.later"))
    assert default["proxycommand"].endswith(" https://hub.example.org/ myhub")
    assert gpu["proxycommand"].endswith(" https://hub.example.org/ myhub.gpu")
    assert later["proxycommand"].endswith(" https://hub.example.org/ '%n'")
    assert (default["user"], gpu["user"], later["user"]) == ("alice", "alice", "jovyan")
    assert "knownhostscommand" not in default  # pinned already: no command to run
    assert "knownhostscommand" not in gpu
    assert later["knownhostscommand"] == (
        "/usr/bin/python3 -m jupyter_sshd_proxy_client known-hosts "
        f'--known-hosts "{tmp_path}/k h%%" %n %I %H'
    )
    for values in (default, gpu, later):
        assert values["stricthostkeychecking"] == "true"
    assert ssh_g(config, "other")["user"] == "nobody"


def test_a_server_that_is_not_pinned_yet_gets_the_known_hosts_command(tmp_path):
    config = tmp_path / "config"
    config.write_text(block(tmp_path, pinned_gpu=False))
    assert ssh_g(config, "myhub.gpu")["knownhostscommand"].endswith(" myhub.gpu %I %H")


def test_ssh_version():
    version = ssh_files.ssh_version()
    assert version is not None
    assert version >= (8, 5)
    assert ssh_files.ssh_version("/nonexistent/ssh") is None
