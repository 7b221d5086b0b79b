"""Edits of authorized_keys never lose a line, even from two servers at once.

Named servers of one user share the home directory, so two Jupyter servers
(two processes) may edit ~/.ssh/authorized_keys at the same moment. Each edit
holds a lock from reading to writing: no add is lost, and a removed key never
comes back. A symlinked authorized_keys (dotfile managers) stays a link.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import threading
import urllib.parse

import pytest

from .test_api import call


def made_up_key(label: str) -> tuple[str, str]:
    """(line, fingerprint) of an Ed25519 public key nobody holds the private half of."""
    public = hashlib.sha256(label.encode()).digest()
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + public
    digest = hashlib.sha256(blob).digest()
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()} {label}"
    return line, "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@pytest.fixture(scope="module")
def two_servers(setup):
    """Two servers of the same user, sharing its authorized_keys file."""
    first = setup.server().start()
    try:
        second = setup.server().start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def run_together(*jobs) -> None:
    errors = []

    def run(job):
        try:
            job()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def test_two_servers_adding_100_keys_each_lose_none(two_servers, setup):
    original = setup.authorized_keys.read_bytes()
    batches = [
        [made_up_key(f"{setup.account.name}-{server}-{n}")[0] for n in range(100)]
        for server in range(2)
    ]

    def add_all(server, lines):
        def job():
            for line in lines:
                status, body = call(server, "POST", "/authorized-keys", {"key": line})
                assert status == 201, body

        return job

    try:
        run_together(*(add_all(server, lines) for server, lines in zip(two_servers, batches)))
        content = setup.authorized_keys.read_bytes()
        assert content.startswith(original)
        added = content[len(original) :].decode().splitlines()
        assert sorted(added) == sorted(batches[0] + batches[1])
    finally:
        setup.authorized_keys.write_bytes(original)


def test_a_removed_key_stays_removed_while_another_server_adds(two_servers, setup):
    original = setup.authorized_keys.read_bytes()
    first, second = two_servers
    try:
        for round in range(10):
            line, fingerprint = made_up_key(f"{setup.account.name}-revoked-{round}")
            assert call(first, "POST", "/authorized-keys", {"key": line})[0] == 201
            query = "?fingerprint=" + urllib.parse.quote(fingerprint, safe="")
            others = [made_up_key(f"{setup.account.name}-{round}-{n}")[0] for n in range(10)]

            def remove(query=query):
                assert call(first, "DELETE", "/authorized-keys" + query)[0] == 204

            def add(others=others):
                for other in others:
                    assert call(second, "POST", "/authorized-keys", {"key": other})[0] == 201

            run_together(remove, add)
            content = setup.authorized_keys.read_text()
            assert line not in content, f"round {round}: the removed key came back"
            assert all(other in content for other in others)
    finally:
        setup.authorized_keys.write_bytes(original)


def test_a_symlinked_authorized_keys_stays_a_link(two_servers, setup):
    first = two_servers[0]
    path = setup.authorized_keys
    original = path.read_bytes()
    target = path.with_name("authorized_keys.managed")
    target.write_bytes(original)
    target.chmod(0o600)
    setup.account.own(target)
    path.unlink()
    path.symlink_to(target.name)
    try:
        line, fingerprint = made_up_key(f"{setup.account.name}-linked")
        assert call(first, "POST", "/authorized-keys", {"key": line})[0] == 201
        assert path.is_symlink()
        assert os.readlink(path) == target.name
        assert target.read_bytes() == original + line.encode() + b"\n"
        query = "?fingerprint=" + urllib.parse.quote(fingerprint, safe="")
        assert call(first, "DELETE", "/authorized-keys" + query)[0] == 204
        assert path.is_symlink()
        assert target.read_bytes() == original
        assert not [name for name in os.listdir(path.parent) if ".tmp-" in name]
    finally:
        path.unlink()
        target.rename(path)
