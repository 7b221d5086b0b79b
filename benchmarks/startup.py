"""The ProxyCommand's start-up: what ssh waits for on every new connection.

    .venv/bin/python benchmarks/startup.py [--runs 20] [--command 'PYTHON -m MODULE' ...]

Runs `proxy` to a closed port on 127.0.0.1, for a server's URL and for a Hub
block's (`--user --name URL HOST`), so each run is the whole start-up up to
connecting (interpreter, imports, websockets) and its one-line failure; the
Hub's API is not asked (a refused connection is not its business). Prints
the median and the minimum wall time, and the modules imported (from
`python -X importtime`) with the heavy ones named. Several --command
(another virtualenv, say one with an older version) run interleaved, so
that a busy machine slows them alike. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time

HEAVY = ("urllib.request", "http.client", "email.message", "ssl", "jupyter_server", "tornado")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def modules(command: list[str], args: list[str], env: dict) -> list[str]:
    traced = subprocess.run(
        [command[0], "-X", "importtime", *command[1:], *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [
        line.rsplit("|", 1)[-1].strip()
        for line in traced.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("imported package")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--command",
        action="append",
        help="how to run the command line (default: this Python -m jupyter_sshd_proxy_client)",
    )
    options = parser.parse_args()
    commands = [shlex.split(c) for c in options.command or []] or [
        [sys.executable, "-m", "jupyter_sshd_proxy_client"]
    ]
    port = closed_port()
    paths = {
        "server": ["proxy", f"http://127.0.0.1:{port}/user/alice/"],
        "hub": ["proxy", "--user", "alice", "--name", "hub", f"http://127.0.0.1:{port}/", "hub.x"],
    }
    env = {**os.environ, "JUPYTER_SSHD_PROXY_TOKEN": "t" * 32}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower() or k.startswith("JUPYTER")}
    times: dict[tuple[int, str], list[float]] = {
        (i, path): [] for i in range(len(commands)) for path in paths
    }
    for _ in range(options.runs):
        for i, command in enumerate(commands):
            for path, args in paths.items():
                started = time.perf_counter()
                result = subprocess.run(
                    [*command, *args], env=env, stdin=subprocess.DEVNULL,
                    capture_output=True, text=True, check=False, cwd="/",
                )  # fmt: skip
                times[i, path].append(time.perf_counter() - started)
                if result.returncode != 255 or "Connection refused" not in result.stderr:
                    sys.exit(f"{shlex.join(command)}: {result.stderr.strip()}")
    for (i, path), seconds in times.items():
        loaded = modules(commands[i], paths[path], env)
        heavy = [name for name in HEAVY if name in loaded]
        median = statistics.median(seconds) * 1000
        print(  # noqa: T201
            f"{shlex.join(commands[i])}  {path:6}  median {median:.1f} ms"
            f"  min {min(seconds) * 1000:.1f} ms  ({options.runs} runs)  {len(loaded)} modules"
            f"  heavy: {', '.join(heavy) or 'none'}"
        )


if __name__ == "__main__":
    main()
