"""A server's trust in the Hub's certificate authority (user_ca.py): what it
takes from the authority's answer, the files and sshd options it writes, and
how it fails closed. Real sshd checks the options (sshd -T)."""

from __future__ import annotations

import json
import os
import pwd

import pytest

from jupyter_sshd_proxy import sshd, user_ca
from jupyter_sshd_proxy.settings import SSHDProxy
from jupyter_sshd_proxy_client.errors import ConfigError

from ..support.helpers import make_key


@pytest.fixture
def ca_line(tmp_path):
    directory = tmp_path / "ca"
    directory.mkdir(mode=0o700)
    key = make_key(directory / "ca")
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_the_answer_must_be_a_short_list_of_plain_keys(ca_line):
    url = "http://hub/services/ssh-ca/keys"
    keys = user_ca.answer_keys(json.dumps({"keys": [ca_line]}).encode(), url)
    assert [f"{k.type} {k.blob}" for k in keys] == [ca_line]
    for body, why in [
        (b"<html>", f"{url} did not answer JSON"),
        (b"[]", f'{url} answered no "keys" list'),
        (json.dumps({"keys": []}).encode(), f"{url} lists no key"),
        (json.dumps({"keys": [ca_line] * 9}).encode(), f"{url} lists 9 keys, more than 8"),
        (json.dumps({"keys": [5]}).encode(), f"{url} lists a key that is not a string"),
        (
            json.dumps({"keys": [f'command="sh" {ca_line}']}).encode(),
            f"{url} lists a key that is refused: the line starts with options",
        ),
        (
            json.dumps({"keys": [ca_line + "\nssh-ed25519 AAAA"]}).encode(),
            f"{url} lists a key that is refused: the key must be a single line",
        ),
    ]:
        with pytest.raises(user_ca.NotTrusted) as refused:
            user_ca.answer_keys(body, url)
        assert str(refused.value).startswith(why), str(refused.value)


def test_trust_writes_the_keys_and_this_hub_users_principal_only(ca_line, tmp_path):
    keys_file = tmp_path / "ca.pub"
    keys_file.write_text(f"# the Hub's CA\n{ca_line} comment\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    options, trust = user_ca.prepare(str(keys_file), "ann", str(state))
    assert options == [
        f'TrustedUserCAKeys "{state}/trusted_user_ca_keys"',
        f'AuthorizedPrincipalsFile "{state}/authorized_principals"',
    ]
    assert (state / "authorized_principals").read_text() == "hub:ann\n"
    assert (state / "trusted_user_ca_keys").read_text() == ca_line + "\n"
    assert oct(os.stat(state / "authorized_principals").st_mode & 0o777) == "0o600"
    assert trust.as_json() == {
        "source": str(keys_file),
        "trusted": True,
        "principal": "hub:ann",
        "ca_fingerprints": [user_ca.parse_keys([ca_line], "x")[0].fingerprint],
        "error": None,
    }
    # sshd itself takes the options.
    sshd_path = sshd.find_program("sshd", "", "x")
    user = pwd.getpwuid(os.getuid())
    text = sshd.render_sshd_config(
        host_keys=[str(make_key(state / "host"))],
        authorized_keys_files=[str(tmp_path / "authorized_keys")],
        user=user,
        log_level="INFO",
        version=sshd.sshd_version(sshd_path),
        certificate_options=options,
    )
    config = state / "sshd_config"
    config.write_text(text)
    effective = sshd.check_sshd_config(sshd_path, str(config))
    assert effective["trustedusercakeys"] == f"{state}/trusted_user_ca_keys"
    assert effective["authorizedprincipalsfile"] == f"{state}/authorized_principals"


@pytest.mark.parametrize(
    ("source", "hub_user", "why"),
    [
        ("ca.pub", None, "JUPYTERHUB_USER is not set, so no Hub user's certificate can be trusted"),
        ("ca.pub", "a,b", "the Hub user name 'a,b' cannot be an SSH certificate principal"),
        # A newline would write a second principal line: hub:ann, then ben's.
        ("ca.pub", "ann\nhub:ben", "the Hub user name 'ann\\nhub:ben' cannot be an SSH"),
        ("ca.pub", "ann\n", "the Hub user name 'ann\\n' cannot be an SSH"),
        ("ca.pub", "*", "the Hub user name '*' cannot be an SSH"),
        ("ca.pub", "ANN\u212a", "the Hub user name 'ANN\u212a' cannot be an SSH"),
        ("missing.pub", "ann", "cannot read the certificate authority's keys from "),
        ("http://127.0.0.1:9/keys", "ann", "cannot fetch the certificate authority's keys from"),
    ],
)
def test_certificates_fail_closed(ca_line, tmp_path, source, hub_user, why):
    (tmp_path / "ca.pub").write_text(ca_line + "\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if not source.startswith("http"):
        source = str(tmp_path / source)
    options, trust = user_ca.prepare(source, hub_user, str(state))
    assert options == []
    assert trust.trusted is False
    assert trust.error.startswith("SSH certificates are not trusted: " + why), trust.error
    assert trust.error.endswith("; authorized_keys still work")
    assert os.listdir(state) == []


def test_the_setting_takes_a_url_or_an_absolute_path(monkeypatch):
    assert SSHDProxy(trusted_user_ca_keys="https://hub/services/ssh-ca/keys")
    assert SSHDProxy(trusted_user_ca_keys="/etc/ssh-ca.pub").trusted_user_ca_keys == (
        "/etc/ssh-ca.pub"
    )
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_TRUSTED_USER_CA_KEYS", "ca.pub")
    with pytest.raises(ConfigError) as refused:
        SSHDProxy()
    assert str(refused.value) == (
        "JUPYTER_SSHD_PROXY_TRUSTED_USER_CA_KEYS='ca.pub' is neither an http(s) URL nor an "
        "absolute path; give the authority's keys URL (https://HUB/services/ssh-ca/keys) "
        "or a key file's path"
    )


def test_a_certificate_login_line_names_its_key_id_and_serial():
    from jupyter_sshd_proxy import reports

    fingerprint = "SHA256:" + "A" * 43
    line = (
        f"Accepted publickey for jovyan from UNKNOWN port 65535 ssh2: ED25519-CERT {fingerprint} "
        f"ID ann {fingerprint} (serial 17) CA ED25519 {fingerprint}"
    )
    assert reports.read_sshd_line(line) == {
        "kind": "login",
        "user": "jovyan",
        "key_type": "ED25519-CERT",
        "fingerprint": fingerprint,
        "certificate_id": f"ann {fingerprint}",
        "certificate_serial": 17,
    }
