"""The first connection: our ProxyCommand against websocat's, interleaved, in one run.

    .venv/bin/python benchmarks/first_connection.py [--runs 20] [--install NAME=VENV ...]

Starts one local Jupyter server with the sshd proxy (as the demo does) and
measures, for websocat and for `python -P -m jupyter_sshd_proxy_client proxy URL`
(of this venv, or of each --install NAME=VENV, say the main branch's):

  banner  from starting the ProxyCommand alone to sshd's first line on its
          stdout (interpreter, imports, TCP, WebSocket upgrade, sshd -i)
  ssh     `ssh -o ProxyCommand=... HOST true` on a new connection, start to
          exit (that, plus key exchange and authentication)

Byte code is written (to a directory of its own) by a first run of each, as
an installed client has it. The commands take turns within each run, so a
busy machine slows them alike; prints the minimum and the median of each and
the difference to websocat, and the load average (1 minute) before and
after: on a shared machine the medians move with it. Loopback only.

A "before" to compare with: a virtualenv with websockets and the client as
it was, e.g. `python3 -m venv /tmp/before && /tmp/before/bin/pip install
websockets` and `git archive OLD client/jupyter_sshd_proxy_client | tar -x
-C /tmp/before/lib/python3.X/site-packages --strip-components=1`, then
`--install before=/tmp/before --install now=.venv`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_sshd_proxy import demo, sshd

VENV_BIN = Path(sys.executable).parent


def banner_seconds(command: str, env: dict) -> float:
    """Start command (a ProxyCommand line) and read up to sshd's first line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, shell=True, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdin is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.stdin.close()
    process.stdout.close()
    process.wait(10)
    if not line.startswith(b"SSH-"):
        sys.exit(f"{command}: no sshd banner, got {line[:80]!r}")
    return elapsed


def ssh_seconds(common: list[str], command: str, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*common, "-o", f"ProxyCommand={command}", "bench", "true"],
        env=env, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--install",
        action="append",
        metavar="NAME=VENV",
        help="a virtualenv whose client to measure (default: this one, as 'ours')",
    )
    args = parser.parse_args()
    installs = dict(item.split("=", 1) for item in args.install or []) or {
        "ours": str(VENV_BIN.parent)
    }
    load_before = os.getloadavg()[0]
    user = sshd.current_user()
    base = Path(user.pw_dir, ".cache", "jupyter-sshd-proxy")
    base.mkdir(parents=True, mode=0o700, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="first-", dir=base))
    server = None
    try:
        keygen = sshd.find_program("ssh-keygen", "", "ssh-keygen")
        key, authorized, known = demo.prepare_keys(work, keygen, user, "bench")
        token = secrets.token_urlsafe(32)
        port = demo.free_port()
        server = demo.start_server(port, token, work, authorized, work / "jupyter.log")
        common = [
            "ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"IdentityFile={key}", "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=bench",
            "-o", f"User={user.pw_name}",
        ]  # fmt: skip
        commands = {
            "websocat": f"{shlex.quote(str(VENV_BIN / 'websocat'))} --binary -E "
            f"-H={shlex.quote('Authorization: token ' + token)} ws://127.0.0.1:{port}/sshd/"
        }
        for name, venv in installs.items():
            python = shlex.quote(str(Path(venv, "bin", "python")))
            commands[name] = (
                f"{python} -P -m jupyter_sshd_proxy_client proxy http://127.0.0.1:{port}/"
            )
        env = {**os.environ, "JUPYTER_SSHD_PROXY_TOKEN": token}
        env = {k: v for k, v in env.items() if "proxy" not in k.lower() or k.startswith("JUPYTER")}
        # Byte code, as an installed client has it (pip compiles it), kept out
        # of the checkouts: else an editable install compiles on every run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        # The first connection starts the supervisor; warm every command once.
        for command in commands.values():
            ssh_seconds(common, command, env)
            banner_seconds(command, env)
        times: dict[tuple[str, str], list[float]] = {
            (name, kind): [] for name in commands for kind in ("banner", "ssh")
        }
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name, "banner"].append(banner_seconds(command, env))
            for name, command in commands.items():
                times[name, "ssh"].append(ssh_seconds(common, command, env))
    finally:
        if server is not None:
            demo.stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"{args.runs} interleaved runs, load average {load_before:.1f} before, {load:.1f} after")  # noqa: T201
    for kind in ("banner", "ssh"):
        floor = times["websocat", kind]
        for name in commands:
            seconds = times[name, kind]
            low, mid = min(seconds) * 1000, statistics.median(seconds) * 1000
            behind = ""
            if name != "websocat":
                behind = (
                    f"  behind websocat: min {low - min(floor) * 1000:+.1f} ms,"
                    f" median {mid - statistics.median(floor) * 1000:+.1f} ms"
                )
            print(f"{kind:6}  {name:10}  min {low:6.1f} ms  median {mid:6.1f} ms{behind}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
