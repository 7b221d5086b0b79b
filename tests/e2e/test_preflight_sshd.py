"""Preflight against the real sshd and ssh-keygen: sshd accepts the rendered
config, host keys are made once, sshd's refusals become one line, and no
allowed extra option weakens it (tests/unit/test_preflight.py has the rest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_sshd_proxy import sshd
from jupyter_sshd_proxy.settings import SSHDProxy
from jupyter_sshd_proxy_client.errors import PreflightError

from ..support.servers import real_config

# extra_options: an allow-list of options that cannot weaken sshd.

# One valid value for each allowed keyword, and the OpenSSH version that knows it.
ALLOWED_EXAMPLES = {
    "ClientAliveInterval": ("30", (0, 0)),
    "ClientAliveCountMax": ("5", (0, 0)),
    "TCPKeepAlive": ("no", (0, 0)),
    "LoginGraceTime": ("45", (0, 0)),
    "MaxAuthTries": ("3", (0, 0)),
    "MaxSessions": ("20", (0, 0)),
    "ChannelTimeout": ("session=1h", (9, 2)),
    "UnusedConnectionTimeout": ("1h", (9, 2)),
    "RekeyLimit": ("1G 1h", (0, 0)),
    "Compression": ("no", (0, 0)),
    "IPQoS": ("af21 cs1", (0, 0)),
    "UseDNS": ("yes", (0, 0)),
    "AllowTcpForwarding": ("local", (0, 0)),
    "AllowStreamLocalForwarding": ("no", (0, 0)),
    "AllowAgentForwarding": ("no", (0, 0)),
    "DisableForwarding": ("yes", (0, 0)),
    "PermitOpen": ("localhost:8888", (0, 0)),
    "PermitListen": ("8080", (0, 0)),
    "StreamLocalBindMask": ("0077", (0, 0)),
    "StreamLocalBindUnlink": ("yes", (0, 0)),
    "X11Forwarding": ("yes", (0, 0)),
    "X11DisplayOffset": ("20", (0, 0)),
    "Subsystem": ("sftp /usr/lib/openssh/sftp-server", (0, 0)),
    "ForceCommand": ("internal-sftp", (0, 0)),
    "AcceptEnv": ("LANG LC_*", (0, 0)),
    "PermitTTY": ("no", (0, 0)),
    "PermitUserRC": ("no", (0, 0)),
    "ExposeAuthInfo": ("yes", (0, 0)),
    "PrintMotd": ("yes", (0, 0)),
    "PrintLastLog": ("yes", (0, 0)),
    "LogLevel": ("VERBOSE", (0, 0)),
    "LogVerbose": ("kex.c:*", (8, 5)),
    "SyslogFacility": ("LOCAL0", (0, 0)),
    "FingerprintHash": ("md5", (0, 0)),
}

# What decides who may log in, how, and where sshd listens, as `sshd -T` names it.
SECURITY_KEYWORDS = (
    "listenaddress", "port", "addressfamily", "hostkey", "hostcertificate", "pidfile",
    "authenticationmethods", "pubkeyauthentication", "passwordauthentication",
    "kbdinteractiveauthentication", "hostbasedauthentication", "gssapiauthentication",
    "kerberosauthentication", "permitemptypasswords", "usepam", "allowusers", "allowgroups",
    "denyusers", "denygroups", "permitrootlogin", "authorizedkeysfile",
    "authorizedkeyscommand", "authorizedkeyscommanduser", "authorizedprincipalsfile",
    "authorizedprincipalscommand", "authorizedprincipalscommanduser", "trustedusercakeys",
    "revokedkeys", "strictmodes", "gatewayports", "x11uselocalhost", "permituserenvironment",
    "pubkeyacceptedalgorithms", "casignaturealgorithms", "hostbasedacceptedalgorithms",
    "requiredrsasize", "chrootdirectory", "permittunnel", "setenv", "pubkeyauthoptions",
    "ignorerhosts",
)  # fmt: skip


def effective(sshd_path: str, config: Path) -> dict[str, list[str]]:
    """sshd's effective settings for a connection of this user from loopback (-T -C)."""
    user = sshd.current_user().pw_name
    output = subprocess.run(
        [sshd_path, "-T", "-f", str(config),
         "-C", f"user={user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=2222"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        keyword, _, value = line.partition(" ")
        found.setdefault(keyword, []).append(value)
    return found


def test_a_home_with_a_space_or_percent_is_one_keys_file_for_sshd(tmp_path):
    odd = tmp_path / "a home" / "100%h"
    sshd_path = sshd.find_program("sshd", "", "c.SSHDProxy.sshd_path")
    user = sshd.current_user()
    keygen = sshd.find_program("ssh-keygen", "", "c.SSHDProxy.ssh_keygen_path")
    config = tmp_path / "sshd_config"
    config.write_text(
        sshd.render_sshd_config(
            port=2222,
            host_keys=sshd.ensure_host_keys(keygen, str(tmp_path / "keys"), user),
            authorized_keys_files=[str(odd / "authorized_keys")],
            user=user,
            log_level="INFO",
            version=sshd.sshd_version(sshd_path),
        )
    )
    result = subprocess.run(
        [sshd_path, "-T", "-f", str(config), "-C", f"user={user.pw_name},addr=127.0.0.1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("authorizedkeysfile")]
    # sshd -T prints the value as it stores it: unquoted, with % still doubled.
    assert line == f"authorizedkeysfile {str(odd / 'authorized_keys').replace('%', '%%')}"


def test_real_sshd_accepts_the_rendered_config(tmp_path):
    sshd_path, config = real_config(tmp_path, environment=sshd.session_environment(os.environ))
    sshd.check_sshd_config(sshd_path, str(config))
    effective = subprocess.run(
        [sshd_path, "-T", "-f", str(config)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "listenaddress 127.0.0.1:2222" in effective
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "authenticationmethods publickey" in effective
    assert "logingracetime 30" in effective


def test_real_sshd_refusal_is_one_line(tmp_path):
    sshd_path = sshd.find_program("sshd", "", "c.SSHDProxy.sshd_path")
    config = tmp_path / "sshd_config"
    config.write_text("NoSuchOption yes\n")
    with pytest.raises(PreflightError) as error:
        sshd.check_sshd_config(sshd_path, str(config))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"sshd rejects its configuration {config}: ")
    assert "Bad configuration option: NoSuchOption" in message
    assert message.endswith("; check c.SSHDProxy.extra_options")


def test_host_keys_are_made_once_private_and_kept(tmp_path):
    keygen = sshd.find_program("ssh-keygen", "", "c.SSHDProxy.ssh_keygen_path")
    user = sshd.current_user()
    directory = tmp_path / "keys"
    first = sshd.ensure_host_keys(keygen, str(directory), user)
    contents = {path: Path(path).read_bytes() for path in first}
    assert [Path(p).name for p in first] == ["ssh_host_ed25519_key", "ssh_host_rsa_key"]
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    for path in first:
        assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
        assert Path(path + ".pub").exists()
    Path(first[0]).chmod(0o644)
    second = sshd.ensure_host_keys(keygen, str(directory), user)
    assert {path: Path(path).read_bytes() for path in second} == contents
    assert oct(Path(first[0]).stat().st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(directory)) == sorted(
        ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key",
         "ssh_host_rsa_key.pub"]
    )  # fmt: skip


@pytest.mark.skipif(
    os.getuid() != 0, reason="sshd needs its privilege separation directory as root"
)
def test_missing_privilege_separation_directory_as_root(tmp_path):
    """sshd's own refusal, turned into the fix: /run hidden by an empty tmpfs."""
    sshd_path, config = real_config(tmp_path)
    code = (
        "from jupyter_sshd_proxy import sshd\n"
        f"sshd.check_sshd_config({sshd_path!r}, {str(config)!r})\n"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs none /run && exec "$@"', "sh", sys.executable, "-c", code],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "jupyter_sshd_proxy_client.errors.PreflightError: sshd refuses to start as root: Missing "
        "privilege separation directory: /run/sshd; create it with: mkdir -p -m 0755 /run/sshd "
        "(or run the Jupyter server as a normal user)"
    )


def test_no_allowed_option_weakens_authentication_listening_or_the_user(tmp_path):
    """For every allowed keyword, sshd's effective settings that decide who may
    log in, how and where are those of the config without extra options:
    public keys only, 127.0.0.1 only, this user only."""
    sshd_path, config = real_config(tmp_path)
    baseline = effective(sshd_path, config)
    assert baseline["listenaddress"] == ["127.0.0.1:2222"]
    assert baseline["authenticationmethods"] == ["publickey"]
    assert baseline["passwordauthentication"] == ["no"]
    assert baseline["kbdinteractiveauthentication"] == ["no"]
    assert baseline["allowusers"] == [sshd.current_user().pw_name]
    assert baseline["gatewayports"] == ["no"]
    secure = {keyword: baseline.get(keyword) for keyword in SECURITY_KEYWORDS}
    version = sshd.sshd_version(sshd_path)
    tried = []
    for keyword, (value, since) in ALLOWED_EXAMPLES.items():
        if not version.at_least(*since):
            continue
        options = SSHDProxy(
            config=Config({"SSHDProxy": {"extra_options": [f"{keyword} {value}"]}})
        ).extra_options
        sshd_path, config = real_config(tmp_path, extra_options=options)
        sshd.check_sshd_config(sshd_path, str(config))
        found = effective(sshd_path, config)
        assert {k: found.get(k) for k in SECURITY_KEYWORDS} == secure, keyword
        assert found.get(keyword.lower()) != baseline.get(keyword.lower()), (
            f"{keyword} {value} changed nothing: was it applied?"
        )
        tried.append(keyword)
    assert len(tried) >= 30


def test_the_allowed_examples_cover_the_allow_list():
    from jupyter_sshd_proxy.settings import ALLOWED_SSHD_OPTIONS

    assert sorted(ALLOWED_EXAMPLES) == sorted(ALLOWED_SSHD_OPTIONS.values())
