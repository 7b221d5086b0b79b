"""config-ssh on the laptop, where other accounts may live too: its locks,
its state directory, its control sockets, and paths that ssh_config must
hold exactly.

Against one real Jupyter server of this user: what config-ssh does on the
laptop does not depend on the server's account.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs
from jupyter_sshd_proxy_client import ssh_files

from ..support.helpers import (
    FLOCK_ALL,
    HOLD_LOCK,
    Account,
    end_python,
    first_line,
    python_as,
    wait_for,
)
from ..support.laptop import CLI, EXISTING_CONFIG, env_with_token, laptop_home, run_cli
from ..support.servers import ServerSetup

LOCK_TIMEOUT = 10  # seconds config-ssh waits for another edit's lock (files.LOCK_TIMEOUT)


@pytest.fixture(scope="module")
def server(run_dir, client_key):
    setup = ServerSetup(Account.current(), run_dir, client_key)
    original = setup.authorized_keys.read_bytes()
    try:
        with setup.running() as server:
            yield server
    finally:
        setup.authorized_keys.write_bytes(original)  # the keys config-ssh added


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


def config_ssh(server, home: Path, *args: str, timeout: float = 60):
    config = str(home / ".ssh" / "config")
    return run_cli(
        "config-ssh", server.url + "/", "--name", "myhub", "--ssh-config", config, *args,
        token=server.token, timeout=timeout,
    )  # fmt: skip


def test_another_account_cannot_hold_back_config_ssh(server, laptop, attacker):
    """Was broken: config-ssh locked ~/.ssh itself, which every account that can
    open it (mode 0755 is common) can lock too; config-ssh then failed after
    10 s."""
    ssh_dir = laptop / ".ssh"
    for directory in (laptop, ssh_dir):
        directory.chmod(0o755)
    assert config_ssh(server, laptop).returncode == 0  # the lock file exists now
    attack = python_as(attacker, FLOCK_ALL, str(ssh_dir))
    try:
        held = json.loads(first_line(attack))
        assert str(ssh_dir) in held  # the old lock
        assert str(ssh_dir / ".jupyter-sshd-proxy.lock") not in held  # it cannot open this
        started = time.monotonic()
        result = config_ssh(server, laptop, "--name", "second")
        seconds = time.monotonic() - started
    finally:
        end_python(attack)
    assert result.returncode == 0, result.stderr
    assert seconds < LOCK_TIMEOUT - 2
    assert "\nHost second\n" in (ssh_dir / "config").read_text()


def test_a_lock_held_too_long_is_one_line_and_writes_nothing(server, laptop):
    config = laptop / ".ssh" / "config"
    holder = python_as(Account.current(), HOLD_LOCK, str(config))
    try:
        assert first_line(holder) == "held"
        result = config_ssh(server, laptop)
    finally:
        end_python(holder)
    lock = laptop / ".ssh" / ".jupyter-sshd-proxy.lock"
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: {lock} has been held for {LOCK_TIMEOUT}s by another edit of a "
        f"file in {laptop / '.ssh'} (a Jupyter server or config-ssh of yours); try again when "
        "it is done\n"
    )
    assert config.read_text() == EXISTING_CONFIG
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert not (laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts").exists()


# Connection sharing for a long home: a real laptop account whose home is
# 70 characters long, real ssh, a real server.

LONG_HOME = "/tmp/jsp-homes-{pid}/an-example-of-a-home-directory-deep-in-a-network-share"


@pytest.fixture
def long_home_user():
    """A laptop user (a real account, as root) with a 70-character home;
    removed afterwards, with its control directories."""
    if os.getuid() != 0:
        pytest.skip("an account with a long home needs root")
    home = Path(LONG_HOME.format(pid=os.getpid()))
    assert len(str(home)) >= 64
    home.parent.mkdir(mode=0o755)
    account = Account.create(f"jsp-laptop-{os.getpid()}", home)
    shared = [Path(f"/tmp/jupyter-sshd-proxy-{account.uid}")]
    shared.append(Path(f"/run/user/{account.uid}"))
    for path in shared:  # left by an earlier account of this uid
        shutil.rmtree(path, ignore_errors=True)
    try:
        yield account
    finally:
        wait_for(lambda: not of_user(account), 10, "the laptop user's processes to end")
        account.remove()
        shutil.rmtree(home.parent, ignore_errors=True)
        for path in shared:
            shutil.rmtree(path, ignore_errors=True)


def of_user(account: Account) -> list[int]:
    return [pid for pid in procfs.pids() if procfs.owner(pid) == account.uid]


def as_user(account: Account, *argv: str, token: str | None = None, **env: str):
    """argv run by account, as from its login shell: HOME and the rest its own."""
    return subprocess.run(
        argv, user=account.uid, group=account.gid, extra_groups=[], cwd=str(account.home),
        env=env_with_token(token, HOME=str(account.home), USER=account.name,
                           LOGNAME=account.name, SHELL="/bin/sh", **env),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def config_ssh_as(account: Account, server, **env: str):
    result = as_user(account, CLI, "config-ssh", server.url + "/", "--name", "myhub",
                     token=server.token, **env)  # fmt: skip
    return result


def ssh_as(account: Account, *args: str):
    return as_user(account, "ssh", "-o", "BatchMode=yes", *args)


def proxies_of(account: Account) -> list[int]:
    """The ProxyCommands of account's ssh connections that are running."""
    token_file = f"{account.home}/.ssh/jupyter-sshd-proxy/myhub.token"
    return sorted(int(line.split(":")[0]) for line in procfs.processes_mentioning(token_file))


def assert_the_second_connection_shares_the_first(account: Account, server) -> None:
    try:
        result = ssh_as(account, "myhub", "true")
        assert result.returncode == 0, result.stderr
        check = ssh_as(account, "-O", "check", "myhub")
        assert check.returncode == 0, check.stderr
        assert check.stderr.startswith("Master running (pid=")
        proxies = proxies_of(account)
        assert len(proxies) == 1
        again = ssh_as(account, "myhub", "echo", "again")
        assert (again.returncode, again.stdout) == (0, "again\n"), again.stderr
        assert proxies_of(account) == proxies  # no second ProxyCommand
        assert server.status()["sessions"] == 1
    finally:
        ssh_as(account, "-O", "exit", "myhub")
    wait_for(lambda: not proxies_of(account), 10, "the shared connection to end")


def test_a_long_home_shares_connections_through_a_private_directory_in_tmp(server, long_home_user):
    """Was broken: for a home longer than 18 characters connection sharing was
    dropped (the control socket would not fit in a unix socket address)."""
    user = long_home_user
    result = config_ssh_as(user, server)
    assert result.returncode == 0, result.stderr
    assert "connection sharing" not in result.stderr
    directory = f"/tmp/jupyter-sshd-proxy-{user.uid}"
    config = (user.home / ".ssh" / "config").read_text()
    assert (
        f'Match host myhub exec "mkdir -p -m 700 {directory} && test -d {directory} -a '
        f'-O {directory} -a ! -L {directory}"\n'
        "    ControlMaster auto\n"
        f"    ControlPath {directory}/cm-%C\n"
        "    ControlPersist 10m\n"
        "Host *\n"
    ) in config
    assert_the_second_connection_shares_the_first(user, server)
    info = os.lstat(directory)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.uid, 0o700)


def test_a_long_home_shares_connections_in_the_runtime_directory(server, long_home_user):
    """$XDG_RUNTIME_DIR (as logind makes it: /run/user/UID, 0700) comes first."""
    user = long_home_user
    runtime = Path(f"/run/user/{user.uid}")
    runtime.mkdir(mode=0o700)
    user.own(runtime)
    result = config_ssh_as(user, server, XDG_RUNTIME_DIR=str(runtime))
    assert result.returncode == 0, result.stderr
    config = (user.home / ".ssh" / "config").read_text()
    assert f"    ControlPath {runtime}/jupyter-sshd-proxy-{user.uid}/cm-%C\n" in config
    assert_the_second_connection_shares_the_first(user, server)


def test_a_control_directory_made_by_another_account_gets_no_session(
    server, long_home_user, attacker
):
    """After a reboot /tmp is empty, and another account may make the control
    directory first, with a socket where ssh looks for its master. ssh must
    never talk to it (it would hand that account the session): sharing is off
    until the directory is the user's own again, and ssh works without it."""
    user = long_home_user
    assert config_ssh_as(user, server).returncode == 0
    directory = Path(f"/tmp/jupyter-sshd-proxy-{user.uid}")
    shown = ssh_as(user, "-G", "myhub").stdout
    (control_path,) = [
        line.split()[1] for line in shown.splitlines() if line.startswith("controlpath ")
    ]
    shutil.rmtree(directory, ignore_errors=True)  # the reboot
    squatter = python_as(attacker, LISTEN, control_path)
    try:
        assert first_line(squatter) == "listening"
        result = ssh_as(user, "myhub", "echo", "fine")
        assert (result.returncode, result.stdout) == (0, "fine\n"), result.stderr
    finally:
        squatter.stdin.close()
        reached = squatter.stdout.read()
        squatter.wait(10)
        squatter.stdout.close()
    assert reached == "0 connections\n"
    assert "\ncontrolpath " not in ssh_as(user, "-G", "myhub").stdout  # sharing is off


def test_config_ssh_names_a_control_directory_it_will_not_use(server, long_home_user):
    user = long_home_user
    directory = Path(f"/tmp/jupyter-sshd-proxy-{user.uid}")
    directory.mkdir(mode=0o700)  # root's, not the user's
    result = config_ssh_as(user, server)
    assert result.returncode == 0, result.stderr
    own = user.home / ".ssh" / "jupyter-sshd-proxy"
    assert result.stderr.splitlines()[0] == (
        f"jupyter-sshd-proxy: connection sharing stays off: a control socket in {own} would "
        f"not fit in a unix socket address (104 bytes), and {directory} belongs to uid 0: "
        "remove it and run config-ssh again"
    )
    assert "Control" not in (user.home / ".ssh" / "config").read_text()


LISTEN = """
import os, socket, sys, threading
path = sys.argv[1]
os.makedirs(os.path.dirname(path), mode=0o777)
os.chmod(os.path.dirname(path), 0o777)
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
os.chmod(path, 0o777)
listener.listen()
reached = []
def serve():
    while True:
        connection, _ = listener.accept()
        reached.append(connection)
threading.Thread(target=serve, daemon=True).start()
print("listening", flush=True)
sys.stdin.read()
print(f"{len(reached)} connections", flush=True)
"""


def test_the_private_directory_command_in_every_shell(tmp_path):
    """ssh runs `Match exec` with $SHELL -c: sh, bash, zsh, fish and tcsh (those
    installed here) all make the directory, and all refuse one of another
    owner or a symbolic link."""
    directory = tmp_path / "control"
    command = ssh_files.private_dir_command(str(directory))
    shells = [shell for shell in ("sh", "bash", "zsh", "fish", "tcsh") if shutil.which(shell)]
    for shell in shells:
        shutil.rmtree(directory, ignore_errors=True)
        assert subprocess.run([shell, "-c", command], check=False).returncode == 0, shell
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert subprocess.run([shell, "-c", command], check=False).returncode == 0, shell
        if os.getuid() == 0:
            os.chown(directory, 65534, 65534)
            assert subprocess.run([shell, "-c", command], check=False).returncode == 1, shell
        directory.rmdir()
        directory.symlink_to(tmp_path)
        assert subprocess.run([shell, "-c", command], check=False).returncode == 1, shell
        directory.unlink()
    assert "sh" in shells


# The state directory (~/.ssh/jupyter-sshd-proxy: the token, the pinned host
# keys, the control sockets) must be the user's alone.


OTHERS_CHANGE = (
    "is writable by others (mode {mode:04o}): they could change the pinned host keys and the "
    "control sockets; make it yours alone with: chmod 700 {own}"
)


@pytest.mark.parametrize(
    ("owner", "mode", "problem"),
    [
        (
            65534,
            0o700,
            "belongs to uid 65534, not to you (uid 0): its owner could read the token and "
            "change the pinned host keys; move it away and run config-ssh again, which makes "
            "a new one",
        ),
        (0, 0o777, OTHERS_CHANGE),
        (0, 0o770, OTHERS_CHANGE),
        (0, 0o702, OTHERS_CHANGE),
    ],
    ids=["another owner", "world-writable", "group-writable", "other-writable"],
)
def test_a_state_directory_others_may_change_is_refused(laptop, owner, mode, problem):
    """Was broken: config-ssh wrote the token and the pins into such a directory.
    Refused before anything is read or sent: the token is not even looked for."""
    if os.getuid() != 0:
        pytest.skip("a directory of another owner needs root")
    own = laptop / ".ssh" / "jupyter-sshd-proxy"
    own.mkdir()
    own.chmod(mode)
    os.chown(own, owner, owner)
    before = (laptop / ".ssh" / "config").read_bytes()
    result = run_cli(
        "config-ssh", "https://hub.example.org/user/me/", "--ssh-config",
        str(laptop / ".ssh" / "config"), token=None,
    )  # fmt: skip
    expected = problem.format(mode=mode, own=own)
    assert (result.returncode, result.stderr) == (
        1, f"jupyter-sshd-proxy: the state directory {own} {expected}\n"
    )  # fmt: skip
    assert (laptop / ".ssh" / "config").read_bytes() == before
    assert list(own.iterdir()) == []


def test_a_state_directory_others_may_only_read_is_used(server, laptop):
    own = laptop / ".ssh" / "jupyter-sshd-proxy"
    own.mkdir(mode=0o755)
    own.chmod(0o755)
    result = config_ssh(server, laptop)
    assert result.returncode == 0, result.stderr
    token = own / "myhub.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


# Windows paths (and any path with a backslash or a quote) in ssh_config:
# since OpenSSH 8.7 ssh reads \\, \' and \" in a value as escapes, and ' as a
# quote. `ssh -G` on Linux reads a config exactly as ssh.exe on Windows does.


def ssh_g(tmp_path: Path, text: str) -> dict[str, str]:
    config = tmp_path / "config"
    config.write_text(text)
    result = subprocess.run(
        ["ssh", "-G", "-F", str(config), "myhub"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=10,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


@pytest.mark.parametrize(
    ("identity", "known_hosts"),
    [
        (r"\\server\home\me\.ssh\id_ed25519", r"C:\Users\'t Hooft\.ssh\known_hosts"),
        (r"C:\Users\me\.ssh\id_ed25519", r"\\?\C:\Users\me\.ssh\jupyter-sshd-proxy\known_hosts"),
        (r"C:\Users\O'Brien\.ssh\id_ed25519", "C:\\Users\\a b\\\\\\.ssh\\known_hosts"),
        (r"/home/a\'b c/.ssh/id", "/home/x\\\\y#1\\"),
    ],
    ids=["UNC and \\'", "plain and \\\\?\\", "' and trailing backslashes", "posix"],
)
def test_ssh_reads_back_each_path_exactly(tmp_path, identity, known_hosts):
    """Was broken: written as they are, \\\\server lost a backslash and
    C:\\Users\\'t lost one and its quote."""
    block = ssh_files.render_block(
        name="myhub", user="me", proxy_argv=["/usr/bin/python3", "-m", "jupyter_sshd_proxy_client"],
        identity_file=identity, known_hosts=known_hosts,
    )  # fmt: skip
    seen = ssh_g(tmp_path, block)
    assert (seen["identityfile"], seen["userknownhostsfile"]) == (identity, known_hosts)
    settings = ssh_files.block_settings(block)  # what config-ssh checks ssh -G against
    assert (settings["identityfile"], settings["userknownhostsfile"]) == (identity, known_hosts)


def test_a_plain_windows_path_is_written_as_it_is():
    """No backslash that ssh would read as an escape: written as before, which
    ssh before 8.7 (no escapes at all, Windows 10's 8.1) reads alike."""
    block = ssh_files.render_block(
        name="myhub", user="me", proxy_argv=["python"],
        identity_file=r"C:\Users\me\.ssh\id_ed25519", known_hosts=r"C:\Users\me\kh",
    )  # fmt: skip
    assert "    IdentityFile C:\\Users\\me\\.ssh\\id_ed25519\n" in block
    assert "    UserKnownHostsFile C:\\Users\\me\\kh\n" in block


def test_a_windows_proxycommand_is_one_ssh_reads(tmp_path):
    """Was broken: list2cmdline() leaves C:\\Users\\O'Brien\\... unquoted (no space),
    and its ' opened a quote that never closed: ssh then refused the whole file
    ("invalid quotes"). ssh runs the line as written (CreateProcess)."""
    argv = [
        r"C:\Users\O'Brien\AppData\Local\Programs\Python\python.exe", "-m",
        "jupyter_sshd_proxy_client", "proxy", "--token-file",
        r"C:\Users\'t Hooft\.ssh\jupyter-sshd-proxy\myhub.token", "https://h.org/user/me/",
    ]  # fmt: skip
    line = ssh_files.windows_command_line(argv)
    assert line == (
        '"C:\\Users\\O\'Brien\\AppData\\Local\\Programs\\Python\\python.exe" -m '
        "jupyter_sshd_proxy_client proxy --token-file \"C:\\Users\\'t Hooft\\.ssh"
        '\\jupyter-sshd-proxy\\myhub.token" https://h.org/user/me/'
    )
    seen = ssh_g(tmp_path, f"Host myhub\n    ProxyCommand {line}\n")
    assert seen["proxycommand"] == line
    plain = ["C:\\Program Files\\Python\\python.exe", "-m", "x", "C:\\a\\b\\"]
    assert ssh_files.windows_command_line(plain) == subprocess.list2cmdline(plain)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b\tc", ["a", "b", "c"]),
        ('"a b" c', ["a b", "c"]),
        ("a'b c'd", ["ab cd"]),
        (r"\\\a \' \" \ x", ["\\\\a", "'", '"', " x"]),
        (r'"\ x"', ["\\ x"]),
        ("a #b", ["a"]),
        ("a#b", ["a#b"]),
        (r'"C:\Users\"', None),
        ("it's", None),
    ],
)
def test_ssh_words_split_as_ssh_does(tmp_path, text, words):
    """ssh_words() against the real ssh (`ssh -G`, one HostName word)."""
    if words is None:
        with pytest.raises(ValueError, match="is never closed"):
            ssh_files.ssh_words(text)
        config = tmp_path / "config"
        config.write_text(f"Host myhub\n    HostName {text}\n")
        result = subprocess.run(
            ["ssh", "-G", "-F", str(config), "myhub"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 255
        assert "invalid quotes" in result.stderr
        return
    assert ssh_files.ssh_words(text) == words
    if len(words) == 1:  # ssh's HostName takes one word (lower-cased)
        assert ssh_g(tmp_path, f"Host myhub\n    HostName {text}\n")["hostname"] == words[0]
