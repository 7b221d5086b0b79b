"""Speed of ssh through the proxy, against sshd itself and against websocat, in one run.

    .venv/bin/python benchmarks/bench.py [--rounds 15] [--megabytes 256]

Starts one local Jupyter server with the sshd proxy (as the demo does), and a
plain `sshd -D` with the same configuration on a port of its own, then
measures for each path:

  sshd -D   ssh straight to a plain listening sshd (the floor)
  socket    ssh straight to the supervisor's unix socket (sshd -i per connection),
            through a small Python ProxyCommand (ssh cannot dial a unix socket)
  websocat  ssh with websocat --binary -E as the ProxyCommand, through Jupyter
  ours      ssh with `jupyter-sshd-proxy proxy` as the ProxyCommand, through Jupyter

the median time from connecting to sshd's first line (banner: what the server
side adds, free of the client's and the key exchange's noise), the median and
mean time of `ssh host true` on a new connection (first connect: TCP,
WebSocket, key exchange, authentication), the same through an open shared
connection (repeated connect: -o ControlMaster=auto -o ControlPersist=60, as
VS Code and `ssh` with ControlMaster use it), and the throughput of a download
and an upload; then the differences that matter (of the means: connect times
on loopback come in steps of about 50 ms, which makes medians jump). Loopback
only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shlex
import shutil
import socket
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
    parser.add_argument("--rounds", type=int, default=15, help="connects per path and kind")
    parser.add_argument("--megabytes", type=int, default=256, help="size of each transfer")
    args = parser.parse_args()
    user = sshd.current_user()
    base = Path(user.pw_dir, ".cache", "jupyter-sshd-proxy")
    base.mkdir(parents=True, mode=0o700, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    server = listener = None
    try:
        keygen = sshd.find_program("ssh-keygen", "", "ssh-keygen")
        key, authorized, known = demo.prepare_keys(work, keygen, user, "bench")
        token = secrets.token_urlsafe(32)
        port = demo.free_port()
        server = demo.start_server(port, token, work, authorized, work / "jupyter.log")
        listener, listener_port = start_plain_sshd(work, authorized, user)
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
        # The first connection starts the supervisor; its socket is then known.
        subprocess.run(
            [*common, "-o", f"ProxyCommand={ours}", "bench", "true"], env=env, check=True
        )
        proxy_socket = status_socket(port, token)
        unix_pipe = (
            f"{shlex.quote(sys.executable)} -c {shlex.quote(UNIX_PIPE)} {shlex.quote(proxy_socket)}"
        )
        paths = {
            "sshd -D": [*common, "-p", str(listener_port), "127.0.0.1"],
            "socket": [*common, "-o", f"ProxyCommand={unix_pipe}", "bench"],
            "websocat": [*common, "-o", f"ProxyCommand={websocat}", "bench"],
            "ours": [*common, "-o", f"ProxyCommand={ours}", "bench"],
        }
        banners = {
            "sshd -D": lambda: tcp_banner(listener_port),
            "socket": lambda: unix_banner(proxy_socket),
            "websocat": lambda: websocket_banner(port, token),
            "ours": lambda: websocket_banner(port, token),
        }
        results = {}
        for name, argv in paths.items():
            results[name] = measure(name, argv, env, args, work)
            results[name]["banner_ms"] = median_ms(
                [timed_call(banners[name]) for _ in range(args.rounds * 3)]
            )
    finally:
        if server is not None:
            demo.stop_server(server)
        if listener is not None:
            listener.terminate()
            listener.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0


def start_plain_sshd(work: Path, authorized: Path, user) -> tuple[subprocess.Popen, int]:
    """sshd -D with the configuration the proxy would write, on a port of its own."""
    sshd_path = sshd.find_program("sshd", "", "sshd")
    keygen = sshd.find_program("ssh-keygen", "", "ssh-keygen")
    port = demo.free_port()
    config = work / "sshd_config-plain"
    sshd.write_private_file(
        str(config),
        sshd.render_sshd_config(
            port=port,
            host_keys=sshd.ensure_host_keys(keygen, str(work / "host_keys"), user),
            authorized_keys_files=[str(authorized)],
            user=user,
            log_level="ERROR",
            version=sshd.sshd_version(sshd_path),
        ),
    )
    listener = subprocess.Popen(
        [sshd_path, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return listener, port
        except OSError:
            if time.monotonic() > deadline or listener.poll() is not None:
                listener.kill()
                raise
            time.sleep(0.05)


def status_socket(port: int, token: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/sshd-proxy/api/status", headers={"Authorization": f"token {token}"})
    return json.loads(connection.getresponse().read())["socket"]


UNIX_PIPE = """
import os, socket, sys, threading
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
def up():
    while chunk := os.read(0, 65536):
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while chunk := sock.recv(65536):
    os.write(1, chunk)
"""


def unix_banner(path: str) -> None:
    """Connect to the supervisor's socket and read sshd's first line (past the
    supervisor's own line before it)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(path)
        stream = conn.makefile("rb")
        line = stream.readline(256)
        if line.startswith(b"jupyter-sshd-proxy "):
            line = stream.readline(256)
        assert line.startswith(b"SSH-")


def tcp_banner(port: int) -> None:
    """Connect and read sshd's first line, as ssh does before anything else."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.recv(256).startswith(b"SSH-")


def websocket_banner(port: int, token: str) -> None:
    """Open the /sshd/ WebSocket and read sshd's first line from it."""
    from websockets.sync.client import connect

    with connect(
        f"ws://127.0.0.1:{port}/sshd/",
        additional_headers={"Authorization": f"token {token}"},
        compression=None,
        open_timeout=10,
    ) as ws:
        assert ws.recv(timeout=10).startswith(b"SSH-")


def timed_call(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


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


def median_ms(times: list[float | None]) -> float | None:
    finished = [t for t in times if t is not None]
    return statistics.median(finished) * 1000 if finished else None


def mean_ms(times: list[float | None]) -> float | None:
    finished = [t for t in times if t is not None]
    return statistics.mean(finished) * 1000 if finished else None


def measure(name: str, argv: list[str], env: dict, args, work: Path) -> dict:
    first = [timed([*argv, "true"], env) for _ in range(args.rounds)]
    control = work / f"control-{name.replace(' ', '-')}"
    shared = [*argv[:-1], "-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
              "-o", "ControlPersist=60", argv[-1]]  # fmt: skip
    timed([*shared, "true"], env)  # opens the shared connection
    repeated = [timed([*shared, "true"], env) for _ in range(args.rounds)]
    subprocess.run([*shared[:-1], "-O", "exit", shared[-1]], env=env, capture_output=True)
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
    return {
        "first_ms": median_ms(first),
        "first_mean_ms": mean_ms(first),
        "repeated_ms": median_ms(repeated),
        "repeated_mean_ms": mean_ms(repeated),
        "stalls": first.count(None) + repeated.count(None) + (download is None) + (upload is None),
        "download_mb_s": size / download if download else None,
        "upload_mb_s": size / upload if upload else None,
    }


def report(results: dict, args) -> None:
    def show(value, unit, width=8):
        return f"{value:{width}.1f} {unit}" if value is not None else " " * (width - 5) + "stall"

    print(  # noqa: T201
        f"{args.rounds} connects per path and kind (median, mean), "
        f"transfers of {args.megabytes} MiB"
    )
    print(  # noqa: T201
        f"{'path':9} {'banner':>11} {'first connect':>22} {'repeated':>22} "
        f"{'download':>14} {'upload':>14} stalls"
    )
    for name, r in results.items():
        print(  # noqa: T201
            f"{name:9} {show(r['banner_ms'], 'ms')} "
            f"{show(r['first_ms'], 'ms')} {show(r['first_mean_ms'], 'ms')} "
            f"{show(r['repeated_ms'], 'ms')} {show(r['repeated_mean_ms'], 'ms')} "
            f"{show(r['download_mb_s'], 'MB/s')} {show(r['upload_mb_s'], 'MB/s')} "
            f"{r['stalls']:6}"
        )
    ours = results["ours"]
    for other in ("sshd -D", "socket", "websocat"):
        parts = []
        for metric, label in (
            ("banner_ms", "banner"),
            ("first_mean_ms", "first"),
            ("repeated_mean_ms", "repeated"),
        ):
            a, b = ours[metric], results[other][metric]
            parts.append(f"{label} {a - b:+.1f} ms ({a / b:.2f}x)" if a and b else f"{label} n/a")
        for metric in ("download_mb_s", "upload_mb_s"):
            a, b = ours[metric], results[other][metric]
            parts.append(f"{metric} {a / b:.2f}x" if a and b else f"{metric} n/a")
        print(f"ours vs {other}: " + ", ".join(parts))  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
