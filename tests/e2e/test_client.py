"""Our client: `proxy` failures in one line, `config-ssh`, and no token anywhere."""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs

from ..support.helpers import (
    VENV_BIN,
    SSHClient,
    free_port,
    make_key,
    processes_mentioning,
    wait_for,
)
from ..support.laptop import CLI, EXISTING_CONFIG, ServerAt, env_with_token, laptop_home
from ..support.servers import remember_pid


def ssh_through_proxy(url: str, token: str | None):
    """ssh with our ProxyCommand to url; (exit status, stderr lines, seconds)."""
    env = env_with_token(token)
    argv = ["ssh", "-F", "none", "-o", "BatchMode=yes",
            "-o", f"ProxyCommand={shlex.quote(CLI)} proxy {url}", "anyhost", "true"]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30
    )
    return result.returncode, result.stderr.splitlines(), time.monotonic() - started


def our_line(lines: list[str]) -> str:
    ours = [line for line in lines if line.startswith("jupyter-sshd-proxy:")]
    assert len(ours) == 1, lines
    return ours[0]


def test_wrong_token(server):
    code, lines, seconds = ssh_through_proxy(server.url + "/", "wrong-token")
    assert code == 255
    assert our_line(lines) == (
        f"jupyter-sshd-proxy: the server refused the connection (403) for "
        f"ws://127.0.0.1:{server.port}/sshd/: get a new token and try again; if that does not "
        "help, this user may not open a terminal, which ssh needs"
    )
    assert seconds < 2


def test_no_token_at_all(server):
    code, lines, _ = ssh_through_proxy(server.url + "/", None)
    assert code == 255
    assert our_line(lines) == (
        "jupyter-sshd-proxy: no token: set JUPYTER_SSHD_PROXY_TOKEN or give --token-file "
        "(a file with mode 600)"
    )


def test_unreachable_server():
    port = free_port()
    code, lines, seconds = ssh_through_proxy(f"http://127.0.0.1:{port}/", "token")
    assert code == 255
    assert our_line(lines) == (
        f"jupyter-sshd-proxy: cannot connect to ws://127.0.0.1:{port}/sshd/: Connection refused"
    )
    assert seconds < 2


def test_route_missing(setup):
    server = setup.server("--ServerApp.jpserver_extensions=jupyter_server_proxy=False").start()
    try:
        code, lines, seconds = ssh_through_proxy(server.url + "/", server.token)
        assert code == 255
        assert our_line(lines) == (
            f"jupyter-sshd-proxy: no sshd route at ws://127.0.0.1:{server.port}/sshd/: it "
            f"redirected to /sshd (302); install jupyter-sshd-proxy in the Jupyter server's "
            "environment and restart the server, or check the URL"
        )
        assert seconds < 2
    finally:
        server.stop()


def test_sshd_missing(setup):
    server = setup.server(JUPYTER_SSHD_PROXY_SSHD_PATH="/nonexistent/sshd").start()
    try:
        code, lines, seconds = ssh_through_proxy(server.url + "/", server.token)
        assert code == 255
        assert our_line(lines) == (
            "jupyter-sshd-proxy: sshd could not start on the server: sshd not found at "
            "/nonexistent/sshd (c.SSHDProxy.sshd_path / JUPYTER_SSHD_PROXY_SSHD_PATH); correct "
            "that setting, or unset it to use the sshd of openssh-server (Debian/Ubuntu) or "
            "openssh (conda-forge)"
        )
        assert seconds < 2
    finally:
        server.stop()


def test_token_file_readable_by_others_is_refused(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    token_file.chmod(0o644)
    result = subprocess.run(
        [CLI, "proxy", "--token-file", str(token_file), server.url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 255
    assert result.stderr == (
        f"jupyter-sshd-proxy: token file {token_file} can be read by others (mode 0644); "
        f"fix it with: chmod 600 {token_file}\n"
    )
    assert server.token not in result.stderr


def test_token_is_not_on_any_command_line_during_a_session(server, setup, client_key):
    ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
    session = ssh.open_session("sleep 20")
    try:
        command_lines = [procfs.cmdline(pid) for pid in procfs.pids()]
        assert any("jupyter-sshd-proxy proxy" in line for line in command_lines)
        assert not [line for line in command_lines if server.token in line]
    finally:
        ssh.end(session)


# config-ssh


def config_ssh(server, home: Path, *args: str):
    env = env_with_token(server.token)
    return subprocess.run(
        [CLI, "config-ssh", server.url + "/", "--name", "myhub",
         "--ssh-config", str(home / ".ssh" / "config"), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.fixture
def laptop():
    """A user's ~ on the laptop: ~/.ssh with a config of their own."""
    with laptop_home() as home:
        yield home


def test_config_ssh_then_ssh_name_just_works(server, setup, laptop):
    result = config_ssh(server, laptop)
    assert result.returncode == 0, result.stderr
    config = (laptop / ".ssh" / "config").read_text()
    # At the top, where ssh reads it first; the user's text after it, as it was.
    assert config.endswith("\n" + EXISTING_CONFIG)
    own = laptop / ".ssh" / "jupyter-sshd-proxy"
    token_file = own / "myhub.token"
    assert config[: -len(EXISTING_CONFIG) - 1] == (
        "# >>> jupyter-sshd-proxy myhub >>>\n"
        "# Written by `jupyter-sshd-proxy config-ssh`; run it again to update this block.\n"
        "Host myhub\n"
        f"    User {setup.account.name}\n"
        "    HostKeyAlias myhub\n"
        f"    UserKnownHostsFile {own / 'known_hosts'}\n"
        "    StrictHostKeyChecking yes\n"
        f"    IdentityFile {laptop / '.ssh' / 'id_ed25519'}\n"
        "    IdentitiesOnly yes\n"
        "    ForwardAgent no\n"
        "    ControlMaster auto\n"
        f"    ControlPath {own}/cm-%C\n"
        "    ControlPersist 10m\n"
        f"    ProxyCommand {_cli_python()} -P -m jupyter_sshd_proxy_client proxy --token-file "
        f"{token_file} {server.url}/\n"
        "Host *\n"
        "# <<< jupyter-sshd-proxy myhub <<<\n"
    )
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() == server.token + "\n"
    pinned = (own / "known_hosts").read_text().splitlines()
    assert [line.split()[:2] for line in pinned] == [
        ["myhub", "ssh-ed25519"],
        ["myhub", "ssh-rsa"],
    ]
    # The token is in the 0600 token file and nowhere else.
    for path in laptop.rglob("*"):
        if path.is_file() and path != token_file:
            assert server.token not in path.read_text(errors="replace"), path

    env = env_with_token(None)
    ssh = subprocess.run(
        ["ssh", "-F", str(laptop / ".ssh" / "config"), "-o", "ControlMaster=no",
         "myhub", "hostname"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == os.uname().nodename

    again = config_ssh(server, laptop)
    assert again.returncode == 0, again.stderr
    assert (laptop / ".ssh" / "config").read_text() == config
    assert (own / "known_hosts").read_text().splitlines() == pinned


HOSTILE_MODULES = ["secrets", "websockets", "base64", "hmac", "jupyter_sshd_proxy_client"]


def test_modules_where_ssh_is_run_are_not_imported(server, setup, laptop, tmp_path):
    """ssh runs the ProxyCommand in the directory the user typed `ssh` in (a
    cloned repository, say); `python -m` would import a secrets.py there
    into the process that holds the token. config-ssh's `-P` keeps it out."""
    assert config_ssh(server, laptop).returncode == 0
    repository = tmp_path / "cloned"
    (repository / "jupyter_sshd_proxy_client").mkdir(parents=True)
    imported = tmp_path / "imported"
    for module in HOSTILE_MODULES:
        path = repository / (module + ".py")
        if module == "jupyter_sshd_proxy_client":
            path = repository / module / "__init__.py"
        path.write_text(f"open({str(imported)!r}, 'a').write({module!r} + '\\n')\n")
    # The trap works: plain -m in that directory imports what it holds.
    subprocess.run(
        [_cli_python(), "-m", "jupyter_sshd_proxy_client"], cwd=repository,
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert imported.exists()
    imported.unlink()

    ssh = subprocess.run(
        ["ssh", "-F", str(laptop / ".ssh" / "config"), "-o", "ControlMaster=no", "myhub", "true"],
        cwd=repository, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=env_with_token(None), timeout=60,
    )  # fmt: skip
    assert ssh.returncode == 0, ssh.stderr
    assert not imported.exists()


def _cli_python() -> str:
    """The Python that runs our command: its shebang."""
    return Path(CLI).read_text().splitlines()[0][2:]


def test_config_ssh_dry_run_changes_nothing(server, laptop):
    before = {p: p.read_bytes() for p in laptop.rglob("*") if p.is_file()}
    result = config_ssh(server, laptop, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "+Host myhub\n" in result.stdout
    assert {p: p.read_bytes() for p in laptop.rglob("*") if p.is_file()} == before
    assert server.token not in result.stdout + result.stderr


def test_config_ssh_failure_keeps_the_config_byte_for_byte(server, laptop):
    config = laptop / ".ssh" / "config"
    config.write_bytes(EXISTING_CONFIG.encode() + b"# >>> jupyter-sshd-proxy myhub >>>\nHost x\n")
    before = config.read_bytes()
    result = config_ssh(server, laptop)
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: {config}: the jupyter-sshd-proxy block for myhub is damaged (a "
        "marker line is missing); fix or remove it by hand\n"
    )
    assert config.read_bytes() == before


def test_config_ssh_wrong_token_writes_nothing(server, laptop):
    before = {p: p.read_bytes() for p in laptop.rglob("*") if p.is_file()}
    env = env_with_token("wrong")
    result = subprocess.run(
        [CLI, "config-ssh", server.url, "--ssh-config", str(laptop / ".ssh" / "config")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: the server refused the token (403) for {server.url}/; get a new "
        "token and try again\n"
    )
    assert {p: p.read_bytes() for p in laptop.rglob("*") if p.is_file()} == before


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _downloads() -> int:
    """20 by default, 200 in a soak run, or JUPYTER_SSHD_PROXY_DOWNLOADS."""
    soak = os.environ.get("JUPYTER_SSHD_PROXY_SOAK") == "1"
    return int(os.environ.get("JUPYTER_SSHD_PROXY_DOWNLOADS") or (200 if soak else 20))


def test_many_downloads_through_our_proxy_never_stall(server, setup, client_key, tmp_path):
    """websocat 1.13.0 stalls on some of these; ours must not, not once."""
    if not setup.account.is_current:
        pytest.skip("once is enough: the client side is the same for every account")
    ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
    remote = "download-soak.bin"
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(8 * 1024 * 1024))
    assert ssh.run(["scp", "-q", *ssh.options(), str(data), ssh.remote(remote)]).returncode == 0
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote} {tmp_path}/sftp.bin\n")
    expected = _sha256(data)
    for n in range(_downloads()):
        target = tmp_path / "back.bin"
        if n % 2:
            argv = ["sftp", "-q", "-b", str(batch), *ssh.options(), ssh.host_alias]
            target = tmp_path / "sftp.bin"
        else:
            argv = ["scp", "-q", *ssh.options(), ssh.remote(remote), str(target)]
        result = ssh.run(argv, timeout=30)  # raises on a stall: no retry for ours
        assert result.returncode == 0, (n, result.stderr)
        assert _sha256(target) == expected, n
        target.unlink()
    assert ssh.ssh(f"rm {remote}").returncode == 0


def test_key_from_a_fresh_home_is_made_and_authorized(server, laptop):
    assert not (laptop / ".ssh" / "id_ed25519").exists()
    result = config_ssh(server, laptop, "--name", "second")
    assert result.returncode == 0, result.stderr
    assert (laptop / ".ssh" / "id_ed25519").exists()
    assert f"made a new key {laptop / '.ssh' / 'id_ed25519'}" in result.stderr


def test_config_ssh_with_an_existing_identity(server, laptop, tmp_path):
    key = make_key(tmp_path / "mine")
    result = config_ssh(server, laptop, "--identity", str(key))
    assert result.returncode == 0, result.stderr
    assert f"    IdentityFile {key}\n" in (laptop / ".ssh" / "config").read_text()
    assert not (laptop / ".ssh" / "id_ed25519").exists()


# doctor


def doctor(server, laptop: Path, token: str, *args: str):
    env = env_with_token(token)
    return subprocess.run(
        [CLI, "doctor", server.url + "/", "--name", "myhub",
         "--ssh-config", str(laptop / ".ssh" / "config"), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def verdicts(output: str) -> list[tuple[str, str]]:
    return [(line[:5].strip(), line[6:15].strip()) for line in output.splitlines()]


def test_doctor_after_config_ssh_says_ok_to_every_link(server, setup, laptop):
    assert config_ssh(server, laptop).returncode == 0
    result = doctor(server, laptop, server.token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == [
        ("ok", "dns"), ("ok", "tcp"), ("note", "tls"), ("ok", "token"), ("ok", "server"),
        ("ok", "route"), ("ok", "sshd"), ("ok", "key"), ("ok", "host key"),
    ]  # fmt: skip
    assert "carries SSH (SSH-2.0-OpenSSH_" in result.stdout
    assert f"running as {setup.account.name}" in result.stdout


def test_doctor_names_the_first_broken_link(server, laptop):
    result = doctor(server, laptop, "wrong")
    assert result.returncode == 1
    assert verdicts(result.stdout)[3:5] == [("FAIL", "token"), ("skip", "server")]
    assert (
        f"FAIL  token     the server refused the token (403) for {server.url}/; get a new "
        "token and try again\n"
    ) in result.stdout
    assert "wrong" not in result.stdout  # the token itself is never printed


def test_doctor_without_config_ssh_says_what_to_run(server, laptop):
    result = doctor(server, laptop, server.token)
    assert result.returncode == 1
    key_line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert key_line == (
        f"FAIL  key       {laptop}/.ssh/id_ed25519.pub does not exist; run: "
        f"jupyter-sshd-proxy config-ssh {server.url}/"
    )


def test_the_proxy_imports_neither_jupyter_server_nor_importlib_metadata():
    code = (
        "import sys\n"
        "from jupyter_sshd_proxy_client import cli\n"
        "from jupyter_sshd_proxy_client import proxy_command\n"
        "proxy_command.import_websockets()\n"
        "assert not [m for m in sys.modules if m.startswith(('jupyter_server', 'tornado'))]\n"
        "assert 'importlib.metadata' not in sys.modules\n"
        "import importlib.metadata\n"
        "print(importlib.metadata.version('websockets'))\n"
    )
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()[0].isdigit()


def test_urllib_request_is_imported_only_when_websockets_needs_the_proxy_settings():
    """It costs 10 ms per connection; websockets reads the HTTP(S) proxy settings
    with it only when it opens the socket itself (a proxy is configured)."""
    code = (
        "import os, sys\n"
        "from jupyter_sshd_proxy_client import proxy_command\n"
        "proxy_command.import_websockets()\n"
        "assert 'http.client' not in sys.modules\n"
        "from websockets.proxy import get_proxy\n"
        "from websockets.uri import parse_uri\n"
        "os.environ['https_proxy'] = 'http://proxy.example:3128'\n"
        "print(get_proxy(parse_uri('wss://hub.example.org/user/a/sshd/')))\n"
        "import urllib.request\n"
        "assert 'getproxies' in vars(urllib.request), 'the real module'\n"
        "assert sys.modules['urllib.request'] is urllib.request\n"
        "from jupyter_sshd_proxy_client import rest\n"
        "try:\n"
        "    rest.ServerAPI('http://127.0.0.1:1/', 'token').call('GET', 'x')\n"
        "except rest.APIError as error:\n"
        "    print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "http://proxy.example:3128\ncannot reach http://127.0.0.1:1/: Connection refused\n"
    )


# The token file: checked on the file that is read


def proxy_with_token_file(server, token_file: Path):
    return subprocess.run(
        [CLI, "proxy", "--token-file", str(token_file), server.url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
        env=env_with_token(None),
    )  # fmt: skip


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another owner needs root")
def test_token_file_of_another_owner_is_refused(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    token_file.chmod(0o600)
    os.chown(token_file, 65534, 65534)
    result = proxy_with_token_file(server, token_file)
    assert result.returncode == 255
    assert result.stderr == (
        f"jupyter-sshd-proxy: token file {token_file} belongs to uid 65534, not to you "
        "(uid 0); keep your token in a file of your own with mode 600\n"
    )


def test_token_file_that_is_a_fifo_is_refused_at_once(server, tmp_path):
    """Opening a FIFO for reading waits for a writer: the check must not hang."""
    token_file = tmp_path / "token"
    os.mkfifo(token_file, 0o600)
    result = proxy_with_token_file(server, token_file)
    assert result.returncode == 255
    assert result.stderr == (
        f"jupyter-sshd-proxy: token file {token_file} is not a regular file; put the token "
        "in a file with mode 600\n"
    )


def test_a_token_with_a_line_break_is_one_line_and_never_printed(server):
    code, lines, _ = ssh_through_proxy(server.url + "/", server.token + "\nX-Evil: 1")
    assert code == 255
    assert our_line(lines) == (
        "jupyter-sshd-proxy: $JUPYTER_SSHD_PROXY_TOKEN does not hold a token: it has spaces, "
        "control characters or non-ASCII letters in it, which a token never has; copy the "
        "token again"
    )


# config-ssh: a % in the URL, a symlinked config, two runs at once, connection sharing


def ssh_with_config(config: Path, *args: str, timeout: float = 60):
    """ssh -F config ARGS, as a user runs it: (exit status, stdout, stderr)."""
    result = subprocess.run(
        ["ssh", "-F", str(config), *args], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, env=env_with_token(None), timeout=timeout, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def test_a_percent_in_the_url_is_escaped_for_ssh(setup, laptop):
    """JupyterHub escapes some user names (alice+test is /user/alice%2Btest/), and ssh
    expands % in a ProxyCommand: unescaped, ssh fails with `percent_expand: unknown key %2`."""
    base_path = "/user/alice%2Btest/"
    server = ServerAt(
        setup.account, setup.run_dir, setup.token, dict(setup.env),
        [f"--ServerApp.base_url={base_path}"], base_path=base_path,
    )  # fmt: skip
    server.start()
    try:
        result = config_ssh(server, laptop, "--no-connection-sharing")
        assert result.returncode == 0, result.stderr
        config = laptop / ".ssh" / "config"
        assert f" http://127.0.0.1:{server.port}/user/alice%%2Btest/\n" in config.read_text()
        code, out, err = ssh_with_config(config, "myhub", "echo", "escaped")
        assert (code, out) == (0, "escaped\n"), err
    finally:
        pid = server.status()["pid"]
        if pid:
            remember_pid(pid)
        server.stop()


def test_config_ssh_writes_through_a_symlinked_config(server, laptop):
    """Dotfile managers link ~/.ssh/config: the link stays, its target is updated."""
    dotfiles = laptop / "dotfiles"
    dotfiles.mkdir()
    config = laptop / ".ssh" / "config"
    config.rename(dotfiles / "ssh_config")
    config.symlink_to("../dotfiles/ssh_config")
    result = config_ssh(server, laptop)
    assert result.returncode == 0, result.stderr
    assert os.readlink(config) == "../dotfiles/ssh_config"
    text = (dotfiles / "ssh_config").read_text()
    assert text.startswith("# >>> jupyter-sshd-proxy myhub >>>\n")
    assert text.endswith("# <<< jupyter-sshd-proxy myhub <<<\n\n" + EXISTING_CONFIG)
    assert [p.name for p in dotfiles.iterdir()] == ["ssh_config"]  # no temporary file left


NAMES = ["one", "two", "three", "four"]


def test_config_ssh_runs_at_once_all_end_up_in_the_files(server, laptop):
    """All edit ~/.ssh/config and the shared known_hosts, and all need the key made."""
    config = str(laptop / ".ssh" / "config")
    runs = [
        subprocess.Popen(
            [CLI, "config-ssh", server.url + "/", "--name", name, "--ssh-config", config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_with_token(server.token),
        )
        for name in NAMES
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
    config = (laptop / ".ssh" / "config").read_text()
    assert config.endswith("\n" + EXISTING_CONFIG)
    assert [name for name in NAMES if f"\nHost {name}\n" in config] == NAMES
    known_hosts = (laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts").read_text()
    assert sorted({line.split()[0] for line in known_hosts.splitlines()}) == sorted(NAMES)


def _our_proxies(laptop: Path) -> list[int]:
    """The ProxyCommands of this laptop's ssh connections that are running."""
    token_file = str(laptop / ".ssh" / "jupyter-sshd-proxy" / "myhub.token")
    return sorted(int(line.split(":")[0]) for line in processes_mentioning(token_file))


def test_the_second_connection_reuses_the_first(server, laptop):
    """ControlMaster: one WebSocket (one ProxyCommand, one sshd connection) for both."""
    assert config_ssh(server, laptop).returncode == 0
    config = laptop / ".ssh" / "config"
    try:
        assert ssh_with_config(config, "myhub", "true")[0] == 0
        code, _, check = ssh_with_config(config, "-O", "check", "myhub")
        assert code == 0, check
        assert check.startswith("Master running (pid=")
        proxies = _our_proxies(laptop)
        assert len(proxies) == 1
        assert server.status()["sessions"] == 1

        code, out, err = ssh_with_config(config, "myhub", "echo", "again")
        assert (code, out) == (0, "again\n"), err
        assert _our_proxies(laptop) == proxies  # no second ProxyCommand
        assert server.status()["sessions"] == 1
        assert ssh_with_config(config, "-O", "check", "myhub")[2] == check
    finally:
        ssh_with_config(config, "-O", "exit", "myhub")
    wait_for(lambda: not _our_proxies(laptop), 10, "the shared connection to end")


def test_no_connection_sharing_when_asked(server, laptop):
    assert config_ssh(server, laptop, "--no-connection-sharing").returncode == 0
    assert "Control" not in (laptop / ".ssh" / "config").read_text()
