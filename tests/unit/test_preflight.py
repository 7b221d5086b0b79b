"""What the server checks before it starts sshd, and the exact lines it says."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest
from traitlets.config import Config

from jupyter_sshd_proxy import sshd
from jupyter_sshd_proxy.settings import SSHDProxy
from jupyter_sshd_proxy_client.errors import ConfigError, PreflightError

USER = pwd.struct_passwd(("alice", "x", 1000, 1000, "", "/home/alice", "/bin/bash"))


def test_sshd_config_is_pinned():
    text = sshd.render_sshd_config(
        port=2222,
        host_keys=["/keys/ssh_host_ed25519_key", "/keys/ssh_host_rsa_key"],
        authorized_keys_files=["/home/alice/.ssh/authorized_keys"],
        user=USER,
        log_level="INFO",
        version=sshd.SSHDVersion(9, 2, "OpenSSH_9.2"),
        extra_options=["ClientAliveInterval 30", "MaxSessions 20"],
        environment={"PATH": "/opt/conda/bin:/usr/bin", "ODD": 'say "hi" \\o/'},
    )
    assert text == (
        "# Written by jupyter-sshd-proxy for this server; it is rewritten on every start.\n"
        "ListenAddress 127.0.0.1:2222\n"
        "AddressFamily inet\n"
        'HostKey "/keys/ssh_host_ed25519_key"\n'
        'HostKey "/keys/ssh_host_rsa_key"\n'
        "PidFile none\n"
        "AllowUsers alice\n"
        "PermitRootLogin no\n"
        "StrictModes yes\n"
        "AuthenticationMethods publickey\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "HostbasedAuthentication no\n"
        "PermitEmptyPasswords no\n"
        "UsePAM no\n"
        'AuthorizedKeysFile "/home/alice/.ssh/authorized_keys"\n'
        "ClientAliveInterval 30\n"
        "MaxSessions 20\n"
        "Subsystem sftp internal-sftp\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "AllowTcpForwarding yes\n"
        "AllowStreamLocalForwarding yes\n"
        "GatewayPorts no\n"
        "X11Forwarding no\n"
        "PermitTunnel no\n"
        "PermitUserEnvironment no\n"
        "UseDNS no\n"
        "LoginGraceTime 30\n"
        "LogLevel INFO\n"
        'SetEnv "ODD=say \\"hi\\" \\\\o/" "PATH=/opt/conda/bin:/usr/bin"\n'
    )


def test_per_source_penalties_off_from_openssh_9_8():
    def render(major, minor):
        return sshd.render_sshd_config(
            port=1,
            host_keys=[],
            authorized_keys_files=["/k"],
            user=USER,
            log_level="INFO",
            version=sshd.SSHDVersion(major, minor, ""),
        )

    assert "PerSourcePenalties no\n" in render(9, 8)
    assert "PerSourcePenalties" not in render(9, 7)


def _owner_of(path):
    st = path.stat()
    return pwd.struct_passwd(("me", "x", st.st_uid, st.st_gid, "", str(path), "/bin/sh"))


def test_group_writable_home_is_named_with_the_chmod(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("")
    home.chmod(0o775)
    with pytest.raises(PreflightError) as error:
        sshd.check_strict_modes([str(keys)], _owner_of(home))
    assert str(error.value) == (
        f"sshd would ignore {keys}: {home} is group-writable (mode 0775); "
        f"fix it with: chmod go-w {home}"
    )


def test_world_writable_keys_file_is_named(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o755)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("")
    keys.chmod(0o666)
    with pytest.raises(PreflightError) as error:
        sshd.check_strict_modes([str(keys)], _owner_of(home))
    assert str(error.value) == (
        f"sshd would ignore {keys}: {keys} is group- and world-writable (mode 0666); "
        f"fix it with: chmod go-w {keys}"
    )


def test_keys_file_under_tmp_is_refused_as_sshd_would():
    with pytest.raises(PreflightError) as error:
        sshd.check_strict_modes(["/tmp/nowhere/authorized_keys"], USER)
    assert str(error.value) == (
        "sshd would ignore /tmp/nowhere/authorized_keys: /tmp is group- and world-writable "
        "(mode 1777); move it to a directory only you and root can write, such as ~/.ssh"
    )


def test_safe_home_passes(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o750)
    sshd.check_strict_modes([str(home / ".ssh" / "authorized_keys")], _owner_of(home))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run as a uid without a passwd entry")
def test_uid_without_passwd_entry_is_named():
    uid = 54321
    assert not any(entry.pw_uid == uid for entry in pwd.getpwall())
    result = subprocess.run(
        [sys.executable, "-c",
         "from jupyter_sshd_proxy.sshd import current_user; current_user()"],
        user=uid, group=uid, extra_groups=[], capture_output=True, text=True, cwd="/",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "jupyter_sshd_proxy_client.errors.PreflightError: uid 54321 has no entry in the passwd "
        "database, and sshd needs one; add the user to /etc/passwd in the image (or run "
        "with nss_wrapper), as containers with random uids (OpenShift) require"
    )


def test_missing_sshd_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sshd, "SBIN_DIRS", ("/nonexistent-sbin",))
    with pytest.raises(PreflightError) as error:
        sshd.find_program("sshd", "", "c.SSHDProxy.sshd_path / JUPYTER_SSHD_PROXY_SSHD_PATH")
    assert str(error.value) == (
        "sshd not found on PATH or in /nonexistent-sbin; install openssh-server "
        "(Debian/Ubuntu) or openssh (conda-forge), or set c.SSHDProxy.sshd_path / "
        "JUPYTER_SSHD_PROXY_SSHD_PATH"
    )


def test_terminal_problem_names_the_devpts_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("devpts /dev/pts devpts rw,relatime,mode=600,ptmxmode=000 0 0\n")
    problem = sshd.terminal_problem(USER, str(mounts))
    assert problem == (
        "/dev/pts is mounted without gid=5, so sshd running as alice cannot give ssh sessions "
        "a terminal: interactive shells and ssh -t fail, while commands, scp, sftp, rsync and "
        "forwarding work; mount devpts with gid=5,mode=620 as Docker and Kubernetes do"
    )
    mounts.write_text("devpts /dev/pts devpts rw,gid=5,mode=620,ptmxmode=666 0 0\n")
    assert sshd.terminal_problem(USER, str(mounts)) is None


def test_session_environment_leaves_out_what_sshd_sets():
    server_environment = {
        "PATH": "/opt/conda/bin",
        "HOME": "/root",
        "SSH_AUTH_SOCK": "x",
        "JUPYTERHUB_USER": "a",
        "MULTI": "a\nb",
        "TERM": "xterm",
        "bad-name": "1",
    }
    environment = sshd.session_environment(server_environment)
    assert environment == {"PATH": "/opt/conda/bin", "JUPYTERHUB_USER": "a"}


# Configuration: config file, then environment variable, then default.


def test_defaults(monkeypatch):
    for name in list(os.environ):
        if name.startswith("JUPYTER_SSHD_PROXY_"):
            monkeypatch.delenv(name)
    config = SSHDProxy()
    assert config.authorized_keys_files == ["~/.ssh/authorized_keys", "~/.ssh/authorized_keys2"]
    assert config.log_level == "INFO"
    assert config.pass_environment is True
    assert config.start_timeout == 10.0
    assert config.extra_options == []
    assert config.host_key_dir == ""  # the Jupyter data dir's sshd_proxy/host_keys


def test_environment_variables_are_read_when_the_settings_are_made(monkeypatch):
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_LOG_LEVEL", "error")
    assert SSHDProxy().log_level == "ERROR"
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_LOG_LEVEL", "verbose")
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES", "/a/keys:%h/.ssh/more")
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_EXTRA_OPTIONS", "ClientAliveInterval 30; MaxSessions 20")
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_PASS_ENVIRONMENT", "off")
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_START_TIMEOUT", "2.5")
    config = SSHDProxy()
    assert config.log_level == "VERBOSE"
    assert config.authorized_keys_files == ["/a/keys", "%h/.ssh/more"]
    assert config.extra_options == ["ClientAliveInterval 30", "MaxSessions 20"]
    assert config.pass_environment is False
    assert config.start_timeout == 2.5


def test_bad_config_value_names_the_setting():
    with pytest.raises(ConfigError) as error:
        SSHDProxy(config=Config({"SSHDProxy": {"extra_options": ["UsePAM yes"]}}))
    assert str(error.value) == (
        "SSHDProxy.extra_options: UsePAM cannot be changed, jupyter-sshd-proxy sets it to keep "
        "sshd safe; remove that option"
    )


def test_config_file_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_LOG_LEVEL", "DEBUG3")
    config = SSHDProxy(config=Config({"SSHDProxy": {"log_level": "ERROR"}}))
    assert config.log_level == "ERROR"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PASS_ENVIRONMENT", "maybe",
         "JUPYTER_SSHD_PROXY_PASS_ENVIRONMENT='maybe' is not a boolean; use one of 1, true, "
         "yes, on or 0, false, no, off"),
        ("START_TIMEOUT", "soon",
         "JUPYTER_SSHD_PROXY_START_TIMEOUT='soon' is not a positive number of seconds; "
         "use e.g. 10"),
        ("LOG_LEVEL", "loud",
         "JUPYTER_SSHD_PROXY_LOG_LEVEL='loud' is not an sshd LogLevel; use one of QUIET, "
         "FATAL, ERROR, INFO, VERBOSE, DEBUG, DEBUG1, DEBUG2, DEBUG3"),
        ("AUTHORIZED_KEYS_FILES", "keys",
         "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES: 'keys' is relative; use an absolute path, "
         "~/... or %h/..."),
        ("EXTRA_OPTIONS", "PasswordAuthentication yes",
         "JUPYTER_SSHD_PROXY_EXTRA_OPTIONS: PasswordAuthentication cannot be changed, "
         "jupyter-sshd-proxy sets it to keep sshd safe; remove that option"),
        ("ACTIVITY", "often",
         "JUPYTER_SSHD_PROXY_ACTIVITY='often' is not an activity policy; use traffic, "
         "connections or off"),
        ("ACTIVITY_CONNECTION_HOURS", "-1",
         "JUPYTER_SSHD_PROXY_ACTIVITY_CONNECTION_HOURS=-1.0 is not a positive number of hours; "
         "use e.g. 8"),
        ("MAX_UNAUTHENTICATED", "lots",
         "JUPYTER_SSHD_PROXY_MAX_UNAUTHENTICATED='lots' is not a positive whole number of "
         "connections; use e.g. 32"),
        ("ACTIVITY_POLL_SECONDS", "0",
         "JUPYTER_SSHD_PROXY_ACTIVITY_POLL_SECONDS=0.0 is not a positive number of seconds; "
         "use e.g. 30"),
        ("EXTRA_OPTIONS", "ClientAliveInterval",
         "JUPYTER_SSHD_PROXY_EXTRA_OPTIONS: 'ClientAliveInterval' is not an sshd option; write "
         '"Keyword value", e.g. "MaxSessions 20"'),
    ],
)  # fmt: skip
def test_bad_values_say_what_and_how_to_fix(monkeypatch, variable, value, message):
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_" + variable, value)
    with pytest.raises(ConfigError) as error:
        SSHDProxy()
    assert str(error.value) == message


@pytest.mark.parametrize("name", ["start_timeout", "activity_poll_seconds"])
def test_a_number_from_the_config_file_is_checked_too(name):
    with pytest.raises(ConfigError) as error:
        SSHDProxy(config=Config({"SSHDProxy": {name: 0}}))
    assert str(error.value).startswith(f"SSHDProxy.{name}=0.0 is not a positive number of seconds")


def test_help_prints_the_real_defaults_and_names_each_variable():
    text = SSHDProxy.class_get_help()
    assert "--SSHDProxy.start_timeout=<Float>" in text
    for name, trait in SSHDProxy.class_traits(config=True).items():
        assert f"JUPYTER_SSHD_PROXY_{name.upper()}" in " ".join(trait.help.split()), name
    section = text.split("--SSHDProxy.start_timeout=")[1].split("--SSHDProxy.")[0]
    assert "Default: 10.0" in section
    section = text.split("--SSHDProxy.pass_environment=")[1].split("--SSHDProxy.")[0]
    assert "Default: True" in section


@pytest.mark.parametrize("word", ["1", "TRUE", "yes", "On"])
def test_boolean_spellings(monkeypatch, word):
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_PASS_ENVIRONMENT", word)
    assert SSHDProxy().pass_environment is True


@pytest.mark.parametrize(
    "option",
    [
        "Include /etc/ssh/sshd_config.d/*.conf",
        "Match all",
        "AuthorizedKeysCommand /usr/bin/cat",
        "AuthorizedKeysCommandUser nobody",
        "TrustedUserCAKeys /etc/ssh/ca.pub",
        "AuthorizedPrincipalsFile /etc/ssh/principals",
        "GatewayPorts yes",
        "X11UseLocalhost no",
        "PermitUserEnvironment yes",
        "PubkeyAcceptedAlgorithms +ssh-dss",
        "RequiredRSASize 512",
        "Ciphers +3des-cbc",
        "HostCertificate /tmp/cert.pub",
        "ChrootDirectory /",
        "Banner /etc/shadow",
        "DenyUsers nobody",
        "NoSuchOption yes",
    ],
)
def test_options_outside_the_allow_list_are_refused(option):
    keyword = option.split()[0]
    with pytest.raises(ConfigError) as error:
        SSHDProxy(config=Config({"SSHDProxy": {"extra_options": [option]}}))
    assert str(error.value).startswith(
        f"SSHDProxy.extra_options: {keyword} is not allowed: only options that cannot weaken "
        "sshd's authentication, listen address or user may be set (AcceptEnv, "
    )


@pytest.mark.parametrize(
    ("option", "written"),
    [
        ("passwordauthentication=yes", None),
        ("PasswordAuthentication\tyes", None),
        ("x11forwarding = yes", "X11Forwarding yes"),
        ("ClientAliveInterval=30", "ClientAliveInterval 30"),
    ],
)
def test_keywords_are_read_as_sshd_reads_them(option, written):
    config = Config({"SSHDProxy": {"extra_options": [option]}})
    if written is None:
        with pytest.raises(ConfigError) as error:
            SSHDProxy(config=config)
        assert "passwordauthentication cannot be changed" in str(error.value).lower()
    else:
        assert SSHDProxy(config=config).extra_options == [written]


@pytest.mark.parametrize("option", ["MaxStartups 10:30:100", "PerSourceMaxStartups 5"])
def test_listener_options_are_refused_as_without_effect(option):
    with pytest.raises(ConfigError) as error:
        SSHDProxy(config=Config({"SSHDProxy": {"extra_options": [option]}}))
    assert str(error.value) == (
        f"SSHDProxy.extra_options: {option.split()[0]} has no effect: sshd runs once per "
        "connection (sshd -i); set c.SSHDProxy.max_unauthenticated instead"
    )
