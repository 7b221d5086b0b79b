"""What deployments of the original jupyter-sshd-proxy (0.3.0) rely on, kept:
its variables, sshd's default keys files, its host key. Units only (no
Jupyter server); the whole path is in test_original_suite.py and
test_upgrade.py."""

from __future__ import annotations

import os
import subprocess

import pytest
from traitlets.config import Config

from jupyter_sshd_proxy import server, sshd
from jupyter_sshd_proxy.settings import SSHDProxy
from jupyter_sshd_proxy_client.errors import ConfigError

PATH_VARIABLE = "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_PATH"
FILES_VARIABLE = "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES"


@pytest.fixture
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("JUPYTER_SSHD_PROXY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_without_settings_sshd_reads_its_own_default_keys_files(clean_environment, tmp_path):
    """sshd's default AuthorizedKeysFile, which the original left in place."""
    settings = SSHDProxy()
    user = sshd.current_user()
    files = server.authorized_keys_files(settings, user)
    assert files == [
        os.path.join(user.pw_dir, ".ssh", "authorized_keys"),
        os.path.join(user.pw_dir, ".ssh", "authorized_keys2"),
    ]
    assert effective_authorized_keys_files(tmp_path, files) == files


@pytest.mark.parametrize(
    ("text", "files"),
    [
        # the original's default, as it passed it to sshd
        (".ssh/authorized_keys .ssh/authorized_keys2",
         ["~/.ssh/authorized_keys", "~/.ssh/authorized_keys2"]),
        # its own test suite: one absolute path
        ("/srv/keys/alice.pub", ["/srv/keys/alice.pub"]),
        # sshd's tokens, and any white space between the paths
        ("%h/.ssh/a\t /etc/ssh/keys/%u  keys", ["%h/.ssh/a", "/etc/ssh/keys/%u", "~/keys"]),
    ],
)  # fmt: skip
def test_the_original_authorized_keys_path_variable_is_read_as_sshd_reads_it(
    clean_environment, text, files
):
    clean_environment.setenv(PATH_VARIABLE, text)
    settings = SSHDProxy()
    assert settings.authorized_keys_files == files
    assert settings.source("authorized_keys_files") == PATH_VARIABLE


def test_the_original_variable_reaches_sshd_as_the_same_files(clean_environment, tmp_path):
    clean_environment.setenv(PATH_VARIABLE, ".ssh/authorized_keys %h/more /etc/keys/%u")
    user = sshd.current_user()
    files = server.authorized_keys_files(SSHDProxy(), user)
    assert files == [
        os.path.join(user.pw_dir, ".ssh", "authorized_keys"),
        os.path.join(user.pw_dir, "more"),
        f"/etc/keys/{user.pw_name}",
    ]
    assert effective_authorized_keys_files(tmp_path, files) == files


def test_precedence_config_then_our_variable_then_the_original_one(clean_environment):
    clean_environment.setenv(PATH_VARIABLE, ".ssh/authorized_keys")
    clean_environment.setenv(FILES_VARIABLE, "~/.ssh/authorized_keys")  # the same file
    settings = SSHDProxy()
    assert settings.authorized_keys_files == ["~/.ssh/authorized_keys"]
    assert settings.source("authorized_keys_files") == FILES_VARIABLE
    configured = SSHDProxy(config=Config({"SSHDProxy": {"authorized_keys_files": ["/k"]}}))
    assert configured.authorized_keys_files == ["/k"]


def test_the_two_variables_naming_different_files_is_one_clear_line(clean_environment):
    clean_environment.setenv(PATH_VARIABLE, ".ssh/other_keys")
    clean_environment.setenv(FILES_VARIABLE, "~/.ssh/authorized_keys")
    with pytest.raises(ConfigError) as error:
        SSHDProxy()
    assert str(error.value) == (
        f"{FILES_VARIABLE}='~/.ssh/authorized_keys' and {PATH_VARIABLE}='.ssh/other_keys' "
        f"disagree; set only {FILES_VARIABLE}"
    )


def test_a_bad_path_in_the_original_variable_names_that_variable(clean_environment):
    clean_environment.setenv(PATH_VARIABLE, '.ssh/"keys"')
    with pytest.raises(ConfigError) as error:
        SSHDProxy()
    assert str(error.value).startswith(f'{PATH_VARIABLE}: \'~/.ssh/"keys"\' contains "')


def test_the_help_names_both_variables():
    help_text = " ".join(SSHDProxy.authorized_keys_files.help.split())
    assert PATH_VARIABLE in help_text
    assert help_text.endswith(f"Environment variable: {FILES_VARIABLE}.")


def effective_authorized_keys_files(tmp_path, files: list[str]) -> list[str]:
    """The AuthorizedKeysFile that sshd itself reads from our rendered config (sshd -T)."""
    sshd_path = sshd.find_program("sshd", "", "c.SSHDProxy.sshd_path")
    keygen = sshd.find_program("ssh-keygen", "", "c.SSHDProxy.ssh_keygen_path")
    user = sshd.current_user()
    config = tmp_path / "sshd_config"
    config.write_text(
        sshd.render_sshd_config(
            port=2222,
            host_keys=sshd.ensure_host_keys(keygen, str(tmp_path / "keys"), user),
            authorized_keys_files=files,
            user=user,
            log_level="INFO",
            version=sshd.sshd_version(sshd_path),
        )
    )
    output = subprocess.run(
        [sshd_path, "-T", "-f", str(config)], capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("authorizedkeysfile "))
    return line.split()[1:]


# The original's host key, ~/.ssh/jupyter_sshd_hostkey


def test_the_original_host_key_is_looked_for_where_the_original_made_it(clean_environment):
    assert SSHDProxy().legacy_host_key == "~/.ssh/jupyter_sshd_hostkey"
    clean_environment.setenv("JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY", "none")
    assert SSHDProxy().legacy_host_key == ""  # retired: never presented


def test_a_relative_original_host_key_path_is_one_line(clean_environment):
    clean_environment.setenv("JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY", "jupyter_sshd_hostkey")
    with pytest.raises(ConfigError) as error:
        SSHDProxy()
    assert str(error.value) == (
        "JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY='jupyter_sshd_hostkey' is not an absolute path or "
        "~/...; use e.g. ~/.ssh/jupyter_sshd_hostkey, or none to never present it"
    )


def test_the_original_host_key_comes_first_and_ours_all_follow():
    """sshd presents the first HostKey of each type, and proves every one."""
    from jupyter_sshd_proxy.host_keys import HostKey, presented
    from jupyter_sshd_proxy_client.keys.grammar import PublicKey

    def key(path, kind, legacy=False):
        return HostKey(path, PublicKey("", kind, "AAAA", ""), legacy)

    ours = [key("/k/ed25519", "ssh-ed25519"), key("/k/rsa", "ssh-rsa")]
    legacy = key("/home/a/.ssh/jupyter_sshd_hostkey", "ssh-rsa", legacy=True)
    assert presented(ours, None) == ours
    assert presented(ours, legacy) == [legacy, *ours]


def test_the_original_host_key_is_expanded_with_home_as_the_original_did(
    clean_environment, tmp_path
):
    import logging

    from jupyter_sshd_proxy.host_keys import legacy_host_key

    keygen = sshd.find_program("ssh-keygen", "", "c.SSHDProxy.ssh_keygen_path")
    log = logging.getLogger("test")
    clean_environment.setenv("HOME", str(tmp_path))
    assert legacy_host_key(keygen, "~/.ssh/jupyter_sshd_hostkey", log) is None  # none there
    (tmp_path / ".ssh").mkdir(mode=0o700)
    path = tmp_path / ".ssh" / "jupyter_sshd_hostkey"
    subprocess.run(["ssh-keygen", "-f", str(path), "-q", "-N", ""], check=True)
    found = legacy_host_key(keygen, "~/.ssh/jupyter_sshd_hostkey", log)
    assert found is not None
    assert found.path == str(path)
    assert found.legacy
    public = path.with_suffix(".pub").read_text().split()[:2]
    assert [found.public.type, found.public.blob] == public
    assert not list(tmp_path.glob(".ssh/*.tmp*")), "nothing made beside it"


def test_the_upgrade_notice_is_one_line_naming_what_was_found(tmp_path):
    import logging

    from jupyter_sshd_proxy.upgrade import DIFFERENCES, log_upgrade_notice

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    log = logging.getLogger("test-upgrade-notice")
    lines = Lines()
    log.addHandler(lines)
    try:
        key = tmp_path / "jupyter_sshd_hostkey"
        log_upgrade_notice(str(key), log, environ={})
        assert lines.lines == []  # a new deployment: nothing to say
        key.write_text("")
        environ = {PATH_VARIABLE: ".ssh/authorized_keys"}
        log_upgrade_notice(str(key), log, environ=environ)
        log_upgrade_notice("", log, environ=environ)  # the key retired
    finally:
        log.removeHandler(lines)
    assert lines.lines == [
        "jupyter-sshd-proxy: upgraded from the original jupyter-sshd-proxy (found "
        f"{PATH_VARIABLE} and its host key {key}, kept as they were); what differs on "
        f"purpose: {DIFFERENCES}; see docs/upgrading.md",
        "jupyter-sshd-proxy: upgraded from the original jupyter-sshd-proxy (found "
        f"{PATH_VARIABLE}, kept as they were); what differs on purpose: {DIFFERENCES}; "
        "see docs/upgrading.md",
    ]
    assert "\n" not in DIFFERENCES
