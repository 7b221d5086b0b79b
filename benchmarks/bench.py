"""Speed of ssh through the proxy, against direct sshd and against websocat, in one run.

    .venv/bin/python benchmarks/bench.py [--rounds 15] [--megabytes 256]

Starts one local Jupyter server with the sshd proxy (as the demo does), then
measures, for each path to the same sshd:
  direct    ssh straight to sshd's loopback port (the floor)
  websocat  ssh with websocat --binary -E as the ProxyCommand
  ours      ssh with `jupyter-sshd-proxy proxy` as the ProxyCommand
the median time of `ssh host true` (connect + auth + exit) and the throughput
of a download and an upload, and prints the ratios. Loopback only.
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15, help="connects per path")
    parser.add_argument("--megabytes", type=int, default=256, help="size of each transfer")
    args = parser.parse_args()
    user = sshd.current_user()
    base = Path(user.pw_dir, ".cache", "jupyter-sshd-proxy")
    base.mkdir(parents=True, mode=0o700, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
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
        websocat = (
            f"{shlex.quote(str(VENV_BIN / 'websocat'))} --binary -E "
            f"-H={shlex.quote('Authorization: token ' + token)} ws://127.0.0.1:{port}/sshd/"
        )
        ours = f"{shlex.quote(str(VENV_BIN / 'jupyter-sshd-proxy'))} proxy http://127.0.0.1:{port}/"
        env = {**os.environ, "JUPYTER_SSHD_PROXY_TOKEN": token}
        subprocess.run(
            [*common, "-o", f"ProxyCommand={ours}", "bench", "true"], env=env, check=True
        )
        sshd_port = demo_status_port(port, token)
        paths = {
            "direct": [*common, "-p", str(sshd_port), "127.0.0.1"],
            "websocat": [*common, "-o", f"ProxyCommand={websocat}", "bench"],
            "ours": [*common, "-o", f"ProxyCommand={ours}", "bench"],
        }
        results = {name: measure(argv, env, args) for name, argv in paths.items()}
    finally:
        if server is not None:
            demo.stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0


def demo_status_port(port: int, token: str) -> int:
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/sshd-proxy/api/status", headers={"Authorization": f"token {token}"})
    return json.loads(connection.getresponse().read())["port"]


def timed(argv, env, stdin=None, timeout=120) -> float | None:
    started = time.perf_counter()
    try:
        subprocess.run(
            argv, env=env, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=timeout, check=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None  # a stall: counted, not timed
    return time.perf_counter() - started


def measure(argv, env, args) -> dict:
    connects = [timed([*argv, "true"], env) for _ in range(args.rounds)]
    size = args.megabytes
    download = timed([*argv, f"head -c {size}M /dev/zero"], env)
    with open("/dev/zero", "rb") as zero:
        upload = timed(
            [*argv, "cat > /dev/null"],
            env,
            stdin=subprocess.Popen(
                ["head", "-c", f"{size}M"], stdin=zero, stdout=subprocess.PIPE
            ).stdout,
        )
    finished = [c for c in connects if c is not None]
    return {
        "connect_ms": statistics.median(finished) * 1000 if finished else None,
        "stalls": connects.count(None) + (download is None) + (upload is None),
        "download_mb_s": size / download if download else None,
        "upload_mb_s": size / upload if upload else None,
    }


def report(results: dict, args) -> None:
    def show(value, unit):
        return f"{value:8.1f} {unit}" if value is not None else "   stall"

    print(f"{args.rounds} connects per path, transfers of {args.megabytes} MiB")  # noqa: T201
    print(f"{'path':10} {'connect':>12} {'download':>14} {'upload':>14} stalls")  # noqa: T201
    for name, r in results.items():
        print(  # noqa: T201
            f"{name:10} {show(r['connect_ms'], 'ms')} {show(r['download_mb_s'], 'MB/s')} "
            f"{show(r['upload_mb_s'], 'MB/s')} {r['stalls']:6}"
        )
    ours = results["ours"]
    for other in ("direct", "websocat"):
        ratios = []
        for metric in ("connect_ms", "download_mb_s", "upload_mb_s"):
            a, b = ours[metric], results[other][metric]
            ratios.append(f"{metric} {a / b:.2f}" if a and b else f"{metric} n/a")
        print(f"ours / {other}: " + ", ".join(ratios))  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
