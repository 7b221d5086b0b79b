"""Edits of authorized_keys never lose a line, even from two servers at once.

Named servers of one user share the home directory, so two Jupyter servers
(two processes) may edit ~/.ssh/authorized_keys at the same moment. Each edit
holds a lock from reading to writing: no add is lost, and a removed key never
comes back. A symlinked authorized_keys (dotfile managers) stays a link.

Only the user can hold that lock: another account on the host cannot hold
edits back, and an edit that waits for the lock holds up nothing else of the
Jupyter server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import threading
import time
import urllib.parse

import pytest

from ..support.api import call
from ..support.helpers import FLOCK_ALL, HOLD_LOCK, end_python, first_line, python_as


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


# Locking, as another account on the host would attack it.

KEY_EDIT_WAIT = 5  # seconds an edit waits for the lock (handlers.KEY_EDIT_WAIT)


def timed_call(server, method: str, path: str, body=None):
    started = time.monotonic()
    status, answer = call(server, method, path, body)
    return status, answer, time.monotonic() - started


def test_another_account_cannot_hold_back_key_edits(two_servers, setup, attacker):
    """Was broken: edits took a flock on the keys file's directory, which any
    account that can open ~/.ssh (mode 0755 is common) can hold; every add and
    remove then failed after 10 s, and each try froze the Jupyter server."""
    if setup.account.is_current:
        pytest.skip("the server's own keys directory is under root's private home")
    server = two_servers[0]
    ssh_dir = setup.authorized_keys.parent
    original = setup.authorized_keys.read_bytes()
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in (setup.account.home, ssh_dir)}
    for path in modes:
        path.chmod(0o755)  # what useradd and ssh-keygen often leave
    line, fingerprint = made_up_key(f"{setup.account.name}-attacked")
    query = "?fingerprint=" + urllib.parse.quote(fingerprint, safe="")
    try:
        # One edit first, so that whatever lock file it uses exists for the attacker to try.
        assert call(server, "POST", "/authorized-keys", {"key": line})[0] == 201
        attack = python_as(attacker, FLOCK_ALL, str(ssh_dir))
        try:
            held = json.loads(first_line(attack))
            assert held == [str(ssh_dir)]  # the directory: the old lock; nothing else opens
            assert timed_call(server, "DELETE", "/authorized-keys" + query)[:2] == (204, None)
            status, body, seconds = timed_call(server, "POST", "/authorized-keys", {"key": line})
            assert (status, seconds < KEY_EDIT_WAIT) == (201, True), (body, seconds)
            assert call(server, "DELETE", "/authorized-keys" + query)[0] == 204
        finally:
            end_python(attack)
        assert setup.authorized_keys.read_bytes() == original
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
        setup.authorized_keys.write_bytes(original)


def test_an_edit_that_waits_for_the_lock_holds_up_nothing_else(two_servers, setup):
    """Was broken: the handlers waited for the lock with sleep on the event loop,
    so every kernel, terminal and API call of the server waited too. Now the
    edit waits in a thread, and succeeds once the lock is free."""
    server = two_servers[0]
    original = setup.authorized_keys.read_bytes()
    line, _ = made_up_key(f"{setup.account.name}-waiting")
    holder = python_as(setup.account, HOLD_LOCK, str(setup.authorized_keys))
    answers = []
    try:
        assert first_line(holder) == "held"
        adding = threading.Thread(
            target=lambda: answers.append(call(server, "POST", "/authorized-keys", {"key": line}))
        )
        adding.start()
        waits = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            status, _, seconds = timed_call(server, "GET", "/status")
            assert status == 200
            waits.append(seconds)
        assert max(waits) < 1, f"the server answered in {max(waits):.1f}s while an edit waited"
        assert not answers, "the edit did not wait for the lock"
        end_python(holder)
        adding.join(30)
        assert answers[0][0] == 201, answers
        assert line in setup.authorized_keys.read_text()
    finally:
        end_python(holder)
        setup.authorized_keys.write_bytes(original)


def test_a_lock_held_too_long_is_one_clear_503(two_servers, setup):
    server = two_servers[0]
    original = setup.authorized_keys.read_bytes()
    line, fingerprint = made_up_key(f"{setup.account.name}-refused")
    lock = setup.authorized_keys.parent / ".jupyter-sshd-proxy.lock"
    expected = {
        "message": f"{lock} has been held for 5s by another edit of a file in "
        f"{setup.authorized_keys.parent} (a Jupyter server or config-ssh of yours); try again "
        "when it is done"
    }
    holder = python_as(setup.account, HOLD_LOCK, str(setup.authorized_keys))
    try:
        assert first_line(holder) == "held"
        status, body, seconds = timed_call(server, "POST", "/authorized-keys", {"key": line})
        assert (status, body) == (503, expected)
        assert KEY_EDIT_WAIT <= seconds < KEY_EDIT_WAIT + 5
        query = "?fingerprint=" + urllib.parse.quote(fingerprint, safe="")
        assert call(server, "DELETE", "/authorized-keys" + query) == (503, expected)
        assert setup.authorized_keys.read_bytes() == original
    finally:
        end_python(holder)
        setup.authorized_keys.write_bytes(original)
