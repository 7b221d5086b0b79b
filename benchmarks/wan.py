"""ssh through the route over an emulated link: throughput, the Jupyter server's
CPU per GiB, its API's latency while ssh moves data, parallel transfers and the
ProxyCommand's first connection; for one or more installs in the same run.

    sudo .venv/bin/python benchmarks/wan.py --install before=/tmp/before/venv --install after=.venv
    sudo .venv/bin/python benchmarks/wan.py --quick      # 16 MiB, 1 rep, 0 and 20 ms

Root only (network namespaces, iptables). The link: two network namespaces
made for the run, "laptop" and "server", joined by a veth pair. The server
namespace runs one Jupyter server (with this package's route) per install,
and a plain `sshd -D` with the configuration the route's supervisor writes
(the direct path); the laptop namespace runs ssh, scp, rsync and the
ProxyCommands. Each RTT is made by holding every packet that enters either
namespace over the veth for RTT/2 (benchmarks/netdelay.py, an NFQUEUE
delayer: this kernel has no sch_netem); the hops inside the server (Jupyter
-> supervisor -> sshd) are on its loopback and never delayed.

For each RTT (default 0, 20 and 60 ms), each tool (`ssh cat`, `scp -s`, `rsync -W -e
ssh`), each direction and each path, the median of --reps transfers of a
--size-mib file of random bytes, in MiB/s (the whole command's wall time,
connection set-up included), and the Jupyter server's CPU seconds per GiB
moved (utime+stime of its process, from /proc, before and after). Paths:

  direct          ssh to the plain sshd
  ours-INSTALL    ProxyCommand `python -P -m jupyter_sshd_proxy_client proxy --token-file F URL`
                  of that install (as config-ssh writes it)
  websocat-INSTALL  ProxyCommand `websocat --binary -E ... ws://.../sshd/`, that install's server

Then, at each RTT, the first connection: how long each ProxyCommand takes
from its start to sshd's first line on its stdout, and `ssh HOST true`.
At no delay: the Jupyter API's latency (GET /api/status on a kept-alive
connection) idle and while one upload and one download run through the
route (the laptop's ssh and ProxyCommands at niceness 19 meanwhile, as if
they ran on another machine), and --parallel transfers at once each way,
with where the CPU went.

Every ssh uses -o Ciphers=aes128-gcm@openssh.com, no connection sharing, and
the host keys pinned (StrictHostKeyChecking yes). Prints a Markdown report,
writes it and the raw figures as JSON next to each other (--out). Processes
are ended by their id; the namespaces are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import http.client
import json
import os
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from jupyter_sshd_proxy import demo, sshd

HERE = Path(__file__).resolve().parent
MiB = 1 << 20

# The laptop's ssh and ProxyCommand while the API is timed: on a real link
# they run on another machine; here they would take the server's cores.
LAPTOP_NICE = ["nice", "-n", "19"]

# GET /api/status on one kept-alive connection, 10 ms apart: argv host, port,
# count; the token on stdin's first line, and stdin's end to begin. Prints
# each answer's milliseconds as JSON.
API_CLIENT = """
import http.client, json, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
headers = {"Authorization": "token " + sys.stdin.readline().strip()}
connection = http.client.HTTPConnection(host, port, timeout=10)
connection.connect()
print("connected", flush=True)
sys.stdin.read()
times = []
for _ in range(count):
    begin = time.perf_counter()
    connection.request("GET", "/api/status", headers=headers)
    connection.getresponse().read()
    times.append((time.perf_counter() - begin) * 1000)
    time.sleep(0.01)
print(json.dumps(times))
"""
CIPHER = "aes128-gcm@openssh.com"
SERVER_IP, LAPTOP_IP = "10.77.0.1", "10.77.0.2"
ALIAS = "jsp-wan"  # the HostKeyAlias every path shares: one set of host keys
CLONE_NEWNET = 0x40000000
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOOLS = ("cat", "scp", "rsync")
DIRECTIONS = ("download", "upload")


def say(*words: object) -> None:
    print(f"[wan {time.strftime('%H:%M:%S')}]", *words, file=sys.stderr, flush=True)  # noqa: T201


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, p: float):
    values = sorted(values)
    if not values:
        return None
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """utime+stime of pid (and of its children it has waited for), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


class RelayCPU:
    """CPU seconds of the relays (jupyter_sshd_proxy/relay.py: the supervisor's
    children that are not sshd) while a block runs, sampled from /proc every
    SAMPLE_SECONDS: a relay's CPU after its last sample before it exits is not
    counted (at most one sample's worth each). Zero for an install without relays."""

    SAMPLE_SECONDS = 0.02

    def __init__(self, supervisor: int | None) -> None:
        self.supervisor = supervisor
        self.start: dict[int, float] = {}  # what each relay had used when the block began
        self.last: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def relays(self) -> list[int]:
        if self.supervisor is None:
            return []
        found = []
        for child in Path(f"/proc/{self.supervisor}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for pid in child.read_text().split():
                    with contextlib.suppress(OSError):
                        if b"jupyter_sshd_proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                            found.append(int(pid))
        return found

    def _sample(self) -> None:
        while not self.stop.is_set():
            for pid in self.relays():
                used = cpu_seconds(pid)
                if used is not None:
                    self.last[pid] = used
            self.stop.wait(self.SAMPLE_SECONDS)

    def __enter__(self) -> RelayCPU:
        for pid in self.relays():
            self.start[pid] = cpu_seconds(pid) or 0.0
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(used - self.start.get(pid, 0.0) for pid, used in self.last.items())


# ----------------------------------------------------------------- the link
class Link:
    """Two network namespaces, laptop and server, joined by a veth pair."""

    def __init__(self) -> None:
        tag = str(os.getpid())
        self.names = {"laptop": f"jspwan-laptop-{tag}", "server": f"jspwan-server-{tag}"}
        self.veth = {"laptop": f"jwl{tag}"[:15], "server": f"jws{tag}"[:15]}
        self.fds: dict[str, int] = {}
        self.delayers: list[subprocess.Popen] = []
        self.libc = ctypes.CDLL(None, use_errno=True)

    def create(self) -> None:
        for side, name in self.names.items():
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.fds[side] = os.open(f"/run/netns/{name}", os.O_RDONLY)
        laptop, server = self.veth["laptop"], self.veth["server"]
        subprocess.run(
            ["ip", "link", "add", laptop, "type", "veth", "peer", "name", server], check=True
        )
        for side, address in (("laptop", LAPTOP_IP), ("server", SERVER_IP)):
            name, dev = self.names[side], self.veth[side]
            subprocess.run(["ip", "link", "set", dev, "netns", name], check=True)
            for argv in (
                ["ip", "addr", "add", f"{address}/24", "dev", dev],
                ["ip", "link", "set", dev, "up"],
                ["ip", "link", "set", "lo", "up"],
            ):
                subprocess.run(["ip", "netns", "exec", name, *argv], check=True)

    def setns(self, side: str) -> None:
        if self.libc.setns(self.fds[side], CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into the {side} namespace")

    def popen(self, side: str, argv, **kwargs) -> subprocess.Popen:
        """A process in the side's namespace (entered between fork and exec)."""
        return subprocess.Popen(argv, preexec_fn=lambda: self.setns(side), **kwargs)

    @contextlib.contextmanager
    def inside(self, side: str):
        """Sockets made in this block belong to the side's namespace (this thread only)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            self.setns(side)
            yield
        finally:
            self.libc.setns(home, CLONE_NEWNET)
            os.close(home)

    def iptables(self, side: str, *argv: str) -> None:
        tool = shutil.which("iptables-legacy") or "iptables"
        subprocess.run(
            ["ip", "netns", "exec", self.names[side], tool, "-w", *argv],
            check=True,
            capture_output=True,
        )

    def delay(self, rtt_ms: float) -> None:
        """Every packet entering either namespace over the veth waits rtt_ms / 2."""
        self.undelay()
        if not rtt_ms:
            return
        for side in ("laptop", "server"):
            delayer = self.popen(
                side,
                [sys.executable, str(HERE / "netdelay.py"), str(rtt_ms / 2)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            if delayer.stdout.readline().strip() != "ready":
                delayer.kill()
                delayer.wait()
                msg = "the delayer did not start (see above)"
                raise RuntimeError(msg)
            self.delayers.append(delayer)
            self.iptables(
                side, "-A", "INPUT", "-i", self.veth[side], "-j", "NFQUEUE",
                "--queue-num", "0", "--queue-bypass",
            )  # fmt: skip

    def undelay(self) -> list[dict]:
        stats = []
        for side in ("laptop", "server"):
            if side in self.fds:
                with contextlib.suppress(subprocess.CalledProcessError):
                    self.iptables(side, "-F", "INPUT")
        for delayer in self.delayers:
            delayer.send_signal(signal.SIGTERM)
            out, _ = delayer.communicate(timeout=10)
            with contextlib.suppress(ValueError, IndexError):
                stats.append(json.loads(out.strip().splitlines()[-1]))
        self.delayers.clear()
        return stats

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            self.undelay()
        for side, name in self.names.items():
            if side not in self.fds:
                continue
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:  # only ever processes of this run live there
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            os.close(self.fds.pop(side))
            subprocess.run(["ip", "netns", "del", name], check=False)


# ----------------------------------------------------------------- installs
class Install:
    """One venv's Jupyter server (with the route), in the server namespace."""

    def __init__(self, label: str, venv: Path, work: Path) -> None:
        self.label, self.venv, self.work = label, venv, work / f"install-{label}"
        self.work.mkdir(mode=0o700)
        self.token = secrets.token_hex(24)
        self.token_file = self.work / "token"
        sshd.write_private_file(str(self.token_file), self.token + "\n")
        self.port = 0
        self.process: subprocess.Popen | None = None

    def version(self) -> str:
        return subprocess.run(
            [str(self.venv / "bin/python"), "-c",
             "import importlib.metadata as m; print(*(f'{n} {m.version(n)}' for n in "
             "('jupyter-sshd-proxy', 'jupyter-server-proxy', 'jupyter-server', 'tornado', "
             "'websockets')), sep=', ')"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip

    def start(self, link: Link, authorized_keys: Path, host_keys: Path, port: int) -> None:
        self.port = port
        env = {
            key: value
            for key, value in os.environ.items()
            if "proxy" not in key.lower() and not key.startswith("JUPYTER")
        }
        env.update(
            PATH=f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            HOME=str(self.work),
            JUPYTER_TOKEN=self.token,
            JUPYTER_PLATFORM_DIRS="1",
            JUPYTER_CONFIG_DIR=str(self.work / "config"),
            JUPYTER_DATA_DIR=str(self.work / "data"),
            JUPYTER_RUNTIME_DIR=str(self.work / "runtime"),
            JUPYTER_SSHD_PROXY_HOST_KEY_DIR=str(host_keys),
            JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES=str(authorized_keys),
        )
        argv = [
            str(self.venv / "bin/jupyter-server"), "--no-browser", f"--ip={SERVER_IP}",
            f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={self.work}",
            "--allow-root",
        ]  # fmt: skip
        with open(self.work / "jupyter.log", "wb") as log:
            self.process = link.popen(
                "server", argv, env=env, cwd=self.work, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def get(self, link: Link, path: str, timeout: float = 5) -> tuple[int, bytes]:
        with link.inside("laptop"):
            connection = http.client.HTTPConnection(SERVER_IP, self.port, timeout=timeout)
            connection.connect()
        try:
            connection.request("GET", path, headers={"Authorization": f"token {self.token}"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_ready(self, link: Link, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if self.get(link, "/api/status")[0] == 200:
                    return
            time.sleep(0.2)
        tail = (self.work / "jupyter.log").read_text(errors="replace")[-2000:]
        msg = f"the {self.label} Jupyter server did not start:\n{tail}"
        raise RuntimeError(msg)

    @property
    def pid(self) -> int:
        return self.process.pid

    def supervisor(self) -> int | None:
        """The supervisor's pid: the Jupyter server's child that runs it."""
        for child in Path(f"/proc/{self.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                with contextlib.suppress(OSError):
                    if b"jupyter_sshd_proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
        return None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# ----------------------------------------------------------------- the run
class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size = args.size_mib * MiB
        base = Path(sshd.current_user().pw_dir, ".cache", "jupyter-sshd-proxy")
        base.mkdir(parents=True, mode=0o700, exist_ok=True)  # sshd's StrictModes: not /tmp
        self.work = Path(tempfile.mkdtemp(prefix="wan-", dir=base))
        self.data = Path(tempfile.mkdtemp(prefix="jsp-wan-", dir="/dev/shm"))
        self.link = Link()
        self.installs = [Install(label, venv, self.work) for label, venv in args.installs]
        self.websocat = args.websocat or str(args.installs[0][1] / "bin/websocat")
        self.plain: subprocess.Popen | None = None
        self.results: dict = {"meta": {}, "transfers": [], "connect": {}, "api": {},
                              "parallel": [], "delayer": {}}  # fmt: skip

    # -- setup
    def setup(self) -> None:
        args, meta = self.args, self.results["meta"]
        meta.update(
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            size_mib=args.size_mib, reps=args.reps, rtts_ms=args.rtts, cipher=CIPHER,
            cpus=os.cpu_count(), kernel=os.uname().release,
            ssh=subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
            websocat=subprocess.run([self.websocat, "--version"], capture_output=True,
                                    text=True).stdout.strip(),
            installs={i.label: {"venv": str(i.venv), "versions": i.version()}
                      for i in self.installs},
            load_before=Path("/proc/loadavg").read_text().strip(),
        )  # fmt: skip
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        keygen = sshd.find_program("ssh-keygen", "", "ssh-keygen")
        user = sshd.current_user()
        keys = self.work / "keys"
        keys.mkdir(mode=0o700)
        self.key, authorized, self.known_hosts = demo.prepare_keys(keys, keygen, user, ALIAS)
        for name, mib in (
            ("src.bin", self.args.size_mib),
            ("parallel.bin", self.args.parallel_mib),
        ):
            with open(self.data / name, "wb") as src:
                for _ in range(mib if name == "src.bin" or self.args.parallel else 0):
                    src.write(os.urandom(MiB))
        (self.data / "laptop").mkdir()
        (self.data / "server").mkdir()
        self.link.create()
        ports = iter(range(20000 + os.getpid() % 20000, 65000))
        for install in self.installs:
            install.start(self.link, authorized, keys / "host_keys", next(ports))
        self.plain_port = next(ports)
        self.start_plain_sshd(authorized, keys / "host_keys", user)
        for install in self.installs:
            install.wait_ready(self.link)
            say(f"{install.label}: Jupyter pid {install.pid} port {install.port}")
        self.write_ssh_config()
        for path in self.paths():
            done = self.ssh(path, "true", timeout=120)
            if done.returncode != 0:
                msg = f"ssh through {path} failed: {done.stderr.strip()[-500:]}"
                raise RuntimeError(msg)

    def start_plain_sshd(self, authorized: Path, host_keys: Path, user) -> None:
        sshd_path = sshd.find_program("sshd", "", "sshd")
        keygen = sshd.find_program("ssh-keygen", "", "ssh-keygen")
        config = self.work / "sshd_config-direct"
        text = sshd.render_sshd_config(
            port=self.plain_port,
            host_keys=sshd.ensure_host_keys(keygen, str(host_keys), user),
            authorized_keys_files=[str(authorized)],
            user=user,
            log_level="ERROR",
            version=sshd.sshd_version(sshd_path),
        )
        sshd.write_private_file(str(config), text)
        self.plain = self.link.popen(
            "server",
            [sshd_path, "-D", "-e", "-f", str(config),
             "-o", f"ListenAddress={SERVER_IP}:{self.plain_port}"],
            stdin=subprocess.DEVNULL, stderr=open(self.work / "sshd-direct.log", "wb"),  # noqa: SIM115
        )  # fmt: skip

    def paths(self) -> list[str]:
        return ["direct"] + [
            f"{client}-{i.label}" for i in self.installs for client in ("websocat", "ours")
        ]

    def proxy_command(self, path: str) -> str:
        client, _, label = path.partition("-")
        install = next(i for i in self.installs if i.label == label)
        if client == "ours":
            return (
                f"{install.venv}/bin/python -P -m jupyter_sshd_proxy_client proxy "
                f"--token-file {install.token_file} "
                f"http://{SERVER_IP}:{install.port}/"
            )
        header = shlex.quote(f"Authorization: token {install.token}")  # a benchmark's own token
        return f"{self.websocat} --binary -E -H={header} ws://{SERVER_IP}:{install.port}/sshd/"

    def write_ssh_config(self) -> None:
        self.ssh_config = self.work / "ssh_config"
        blocks = [f"Host direct\n    HostName {SERVER_IP}\n    Port {self.plain_port}\n"]
        for path in self.paths()[1:]:
            blocks.append(f"Host {path}\n    ProxyCommand {self.proxy_command(path)}\n")
        blocks.append(
            f"Host *\n    HostName {SERVER_IP}\n    User {sshd.current_user().pw_name}\n"
            f"    HostKeyAlias {ALIAS}\n    IdentityFile {self.key}\n    IdentitiesOnly yes\n"
            "    IdentityAgent none\n    BatchMode yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n"
            f"    UpdateHostKeys no\n    Ciphers {CIPHER}\n    Compression no\n"
            "    ControlMaster no\n    ControlPath none\n    ForwardAgent no\n    ForwardX11 no\n"
            "    ClearAllForwardings yes\n    ConnectTimeout 30\n    LogLevel ERROR\n"
        )
        sshd.write_private_file(str(self.ssh_config), "\n".join(blocks))

    def ssh(self, path: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        process = self.link.popen(
            "laptop", ["ssh", "-F", str(self.ssh_config), path, *command],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def install_of(self, path: str) -> Install | None:
        label = path.partition("-")[2]
        return next((i for i in self.installs if i.label == label), None)

    # -- transfers
    def transfer(self, rtt: int, tool: str, direction: str, path: str, rep: int) -> dict:
        src = self.data / "src.bin"
        dst = self.data / ("laptop/down.bin" if direction == "download" else "server/up.bin")
        dst.unlink(missing_ok=True)
        remote = f"{path}:{src if direction == 'download' else dst}"
        ends = [remote, str(dst)] if direction == "download" else [str(src), remote]
        stdin, stdout = subprocess.DEVNULL, subprocess.DEVNULL
        if tool == "cat":  # the byte path alone: no sftp or rsync protocol on top
            command = f"cat {src}" if direction == "download" else f"cat > {dst}"
            argv = ["ssh", "-F", str(self.ssh_config), path, command]
            if direction == "download":
                stdout = open(dst, "wb")  # noqa: SIM115
            else:
                stdin = open(src, "rb")  # noqa: SIM115
        elif tool == "scp":
            argv = ["scp", "-F", str(self.ssh_config), "-s", "-q", *ends]
        else:
            argv = ["rsync", "-W", "-e", f"ssh -F {self.ssh_config}", *ends]
        install = self.install_of(path)
        rate = self.args.expect_mib_s if not rtt else min(self.args.expect_mib_s, 2000 / rtt)
        stall_after = 15 + rtt / 5
        give_up_after = 60 + 5 * self.args.size_mib / rate
        cpu_before = cpu_seconds(install.pid) if install else None
        relays = RelayCPU(install.supervisor() if install else None).__enter__()
        started = time.monotonic()
        process = self.link.popen(
            "laptop", argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        for stream in (stdin, stdout):
            if stream is not subprocess.DEVNULL:
                stream.close()
        stalled = self.watch(process, dst, started, stall_after, give_up_after)
        error = process.stderr.read().decode(errors="replace")
        process.wait()
        seconds = time.monotonic() - started
        cpu_after = cpu_seconds(install.pid) if install else None
        time.sleep(0.1)  # the relay ends just after its client
        relays.__exit__()
        ok = (
            process.returncode == 0
            and not stalled
            and dst.exists()
            and dst.stat().st_size == self.size
            and subprocess.run(["cmp", "-s", str(src), str(dst)], check=False).returncode == 0
        )
        record = {
            "rtt_ms": rtt, "tool": tool, "direction": direction, "path": path, "rep": rep,
            "ok": ok, "seconds": round(seconds, 3),
            "mib_s": round(self.args.size_mib / seconds, 2) if ok else None,
            "jupyter_cpu_s_per_gib": (
                round((cpu_after - cpu_before) * 1024 / self.args.size_mib, 3)
                if ok and cpu_before is not None and cpu_after is not None else None
            ),
            "relay_cpu_s_per_gib": (
                round(relays.seconds * 1024 / self.args.size_mib, 3) if ok and install else None
            ),
            "failure": None if ok else (stalled or error.strip()[-300:]
                                        or f"exit status {process.returncode}"),
        }  # fmt: skip
        dst.unlink(missing_ok=True)
        say(
            f"{rtt} ms {tool} {direction} {path} #{rep}: "
            + (f"{record['mib_s']} MiB/s" if ok else f"FAILED {record['failure']}")
            + (
                f", CPU-s/GiB: Jupyter {record['jupyter_cpu_s_per_gib']}, "
                f"relays {record['relay_cpu_s_per_gib']}"
                if install and ok
                else ""
            )
        )
        return record

    @staticmethod
    def watch(process, dst: Path, started: float, stall_after: float, give_up_after: float):
        """Wait for process; end its session if dst stops growing. Why it was ended, or None."""
        size, moved = -1, time.monotonic()
        while True:
            try:
                process.wait(0.25)
                return None
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            with contextlib.suppress(OSError):
                if dst.stat().st_size != size:
                    size, moved = dst.stat().st_size, now
            why = None
            if now - moved > stall_after:
                why = f"stalled: no progress for {stall_after:.0f} s at {max(size, 0)} bytes"
            elif now - started > give_up_after:
                why = f"not done after {give_up_after:.0f} s"
            if why:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the session started for it
                process.wait()
                return why

    # -- first connection
    def first_bytes(self, path: str) -> float | None:
        """Seconds from starting path's ProxyCommand to sshd's first line on its stdout."""
        started = time.perf_counter()
        process = self.link.popen(
            "laptop", ["/bin/sh", "-c", "exec " + self.proxy_command(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        got = b""
        try:
            while b"\n" not in got:
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                got += chunk
            took = time.perf_counter() - started if got.startswith(b"SSH-") else None
        finally:
            process.stdin.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        return took

    def connect_times(self, rtt: int) -> None:
        rounds = self.args.connect_reps
        clients = [p for p in self.paths() if p != "direct"]
        banner: dict[str, list] = {p: [] for p in clients}
        login: dict[str, list] = {p: [] for p in self.paths()}
        for n in range(rounds):
            for path in clients[n % len(clients) :] + clients[: n % len(clients)]:
                banner[path].append(self.first_bytes(path))
        for _ in range(max(3, rounds // 3)):
            for path in self.paths():
                started = time.perf_counter()
                done = self.ssh(path, "true")
                login[path].append(time.perf_counter() - started if done.returncode == 0 else None)

        def ms(times: dict[str, list]) -> dict[str, list]:
            return {p: [round(t * 1000, 2) if t else None for t in v] for p, v in times.items()}

        self.results["connect"][str(rtt)] = {"banner_ms": ms(banner), "ssh_true_ms": ms(login)}
        say(
            f"{rtt} ms first connection, banner (median ms): "
            + ", ".join(f"{p} {median(v) * 1000:.1f}" for p, v in banner.items() if median(v))
        )

    def probe_rtt(self) -> float:
        """The TCP connect time from the laptop to the server, median ms (one RTT)."""
        times = []
        for _ in range(5):
            with self.link.inside("laptop"):
                sock = socket.socket()
            with sock:
                started = time.perf_counter()
                sock.connect((SERVER_IP, self.plain_port))
                times.append((time.perf_counter() - started) * 1000)
        return round(median(times), 2)

    # -- the API under load
    def api_latency(self, install: Install, loaded: bool) -> dict:
        streams = []
        moved = {"down": 0, "up": 0}
        stop = threading.Event()
        if loaded:
            down = self.link.popen(
                "laptop", [*LAPTOP_NICE, "ssh", "-F", str(self.ssh_config),
                           f"ours-{install.label}", "cat /dev/zero"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            up = self.link.popen(
                "laptop", [*LAPTOP_NICE, "ssh", "-F", str(self.ssh_config),
                           f"ours-{install.label}", "cat > /dev/null"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            streams = [down, up]

            def read() -> None:
                while not stop.is_set() and (chunk := down.stdout.read1(MiB)):
                    moved["down"] += len(chunk)

            def write() -> None:
                block = bytes(MiB)
                with contextlib.suppress(OSError, ValueError):
                    while not stop.is_set():
                        up.stdin.write(block)
                        moved["up"] += len(block)

            for work in (read, write):
                threading.Thread(target=work, daemon=True).start()
            time.sleep(2)  # past the connection set-up
        # The requests come from a process of their own: from this one, they
        # would wait for the GIL behind the threads that feed the streams.
        asker = self.link.popen(
            "laptop", [sys.executable, "-c", API_CLIENT, SERVER_IP, str(install.port),
                       str(self.args.api_requests)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        asker.stdin.write(install.token + "\n")  # (never on a command line)
        asker.stdin.flush()
        assert asker.stdout.readline() == "connected\n"
        cpu_before, moved_before = cpu_seconds(install.pid), dict(moved)
        relays = RelayCPU(install.supervisor()).__enter__()
        started = time.monotonic()
        asker.stdin.close()  # go
        times = json.loads(asker.stdout.read())
        asker.wait()
        seconds = time.monotonic() - started
        cpu = cpu_seconds(install.pid) - cpu_before
        relays.__exit__()
        stop.set()
        for stream in streams:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stream.pid, signal.SIGKILL)
            stream.wait()
        result = {
            "p50_ms": round(percentile(times, 50), 2),
            "p99_ms": round(percentile(times, 99), 2),
            "max_ms": round(max(times), 2),
            "jupyter_cores": round(cpu / seconds, 2),
            "relay_cores": round(relays.seconds / seconds, 2),
        }
        if loaded:
            gib = (moved["down"] - moved_before["down"] + moved["up"] - moved_before["up"]) / (
                1 << 30
            )
            result.update(
                down_mib_s=round((moved["down"] - moved_before["down"]) / MiB / seconds, 1),
                up_mib_s=round((moved["up"] - moved_before["up"]) / MiB / seconds, 1),
                jupyter_cpu_s_per_gib=round(cpu / gib, 3) if gib else None,
                relay_cpu_s_per_gib=round(relays.seconds / gib, 3) if gib else None,
            )
        return result

    # -- parallel transfers
    def parallel(self, path: str, direction: str, count: int) -> dict:
        install = self.install_of(path)
        src = self.data / "parallel.bin"
        command = f"cat {src}" if direction == "download" else "cat > /dev/null"
        supervisor = install.supervisor() if install else None
        before = {
            "jupyter": cpu_seconds(install.pid) if install else None,
            "sshd": cpu_seconds(supervisor, children=True) if supervisor else None,
            "client": sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]),
        }
        relays = RelayCPU(supervisor).__enter__()
        started = time.monotonic()
        processes = []
        for _ in range(count):
            stdin = open(src, "rb") if direction == "upload" else subprocess.DEVNULL  # noqa: SIM115
            processes.append(
                self.link.popen(
                    "laptop",
                    ["ssh", "-F", str(self.ssh_config), path, command],
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            if stdin is not subprocess.DEVNULL:
                stdin.close()
        codes = [p.wait(timeout=600) for p in processes]
        seconds = time.monotonic() - started
        if direction == "upload":
            time.sleep(0.5)  # the last sshd exits after its client
        relays.__exit__()
        after = {
            "jupyter": cpu_seconds(install.pid) if install else None,
            "sshd": cpu_seconds(supervisor, children=True) if supervisor else None,
            "client": sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]),
        }
        if after["sshd"] is not None and before["sshd"] is not None:
            after["sshd"] -= relays.seconds  # the relays were the supervisor's children too
        cores = {
            k: round((after[k] - before[k]) / seconds, 2)
            for k in before
            if before[k] is not None and after[k] is not None
        }
        cores["relays"] = round(relays.seconds / seconds, 2)
        record = {
            "path": path, "direction": direction, "count": count, "ok": codes == [0] * count,
            "mib_s": round(count * self.args.parallel_mib / seconds, 1), "cores": cores,
        }  # fmt: skip
        say(f"{count} x {direction} {path}: {record['mib_s']} MiB/s in all, cores {cores}")
        return record

    # -- the whole run
    def measure(self) -> None:
        args = self.args
        paths = self.paths()
        for rtt in args.rtts:
            self.link.delay(rtt)
            self.results.setdefault("rtt_seen_ms", {})[str(rtt)] = self.probe_rtt()
            say(f"RTT {rtt} ms: TCP connect takes {self.results['rtt_seen_ms'][str(rtt)]} ms")
            self.connect_times(rtt)
            for tool in args.tools:
                for direction in args.directions:
                    for rep in range(args.reps):
                        turn = rep % len(paths)
                        for path in paths[turn:] + paths[:turn]:
                            record = self.transfer(rtt, tool, direction, path, rep)
                            self.results["transfers"].append(record)
            if rtt == 0:
                for install in self.installs:
                    self.results["api"][install.label] = {
                        "idle": self.api_latency(install, loaded=False),
                        "loaded": self.api_latency(install, loaded=True),
                    }
                    say(f"API {install.label}: {self.results['api'][install.label]}")
                if args.parallel:
                    for direction in args.directions:
                        for path in ["direct"] + [f"ours-{i.label}" for i in self.installs]:
                            self.results["parallel"].append(
                                self.parallel(path, direction, args.parallel)
                            )
            for n, stats in enumerate(self.link.undelay()):
                self.results["delayer"][f"{rtt}-{n}"] = stats

    def run(self) -> int:
        try:
            self.setup()
            self.measure()
            return 0
        finally:
            self.results["meta"]["load_after"] = Path("/proc/loadavg").read_text().strip()
            for install in self.installs:
                install.stop()
            if self.plain is not None and self.plain.poll() is None:
                self.plain.terminate()
                self.plain.wait(10)
            self.link.delete()
            shutil.rmtree(self.data, ignore_errors=True)
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)


# ----------------------------------------------------------------- report
def cell(values, nd=1):
    value = median(values)
    return "-" if value is None else f"{value:.{nd}f}"


def report(results: dict) -> str:
    meta = results["meta"]
    transfers = results["transfers"]
    paths = list(dict.fromkeys(t["path"] for t in transfers))
    labels = list(meta["installs"])
    out = [
        f"# ssh through the route over an emulated link ({meta['date']})",
        "",
        f"{meta['size_mib']} MiB of random bytes per transfer, median of {meta['reps']}, "
        f"{meta['cipher']}, {meta['cpus']} cores, load average before {meta['load_before']} "
        f"and after {meta.get('load_after')}. MiB/s of the whole command (connection set-up "
        "included), (x) the ratio to direct; Jupyter CPU in seconds per GiB moved. RTT seen "
        "(TCP connect): "
        + ", ".join(f"{k} ms: {v} ms" for k, v in results.get("rtt_seen_ms", {}).items())
        + ".",
        "",
        "Installs: " + "; ".join(f"{k}: {v['versions']}" for k, v in meta["installs"].items()),
        "",
        "| RTT | tool | dir | " + " | ".join(f"{p} MiB/s" for p in paths) + " | "
        + " | ".join(f"CPU-s/GiB {p} (Jupyter / relays)" for p in paths if p != "direct")
        + " |",
    ]  # fmt: skip
    out.append("|" + "---|" * (3 + 2 * len(paths) - 1))
    keys = list(dict.fromkeys((t["rtt_ms"], t["tool"], t["direction"]) for t in transfers))
    for key in keys:
        runs = {
            p: [
                t
                for t in transfers
                if (t["rtt_ms"], t["tool"], t["direction"], t["path"]) == (*key, p)
            ]
            for p in paths
        }
        direct = median([t["mib_s"] for t in runs.get("direct", [])])
        row = []
        for p in paths:
            rate = median([t["mib_s"] for t in runs[p]])
            text = "-" if rate is None else f"{rate:.1f}"
            if p != "direct" and rate and direct:
                text += f" ({rate / direct:.2f}x)"
            failed = sum(not t["ok"] for t in runs[p])
            if failed:
                text += f" [{failed} failed]"
            row.append(text)
        cpu = [
            cell([t["jupyter_cpu_s_per_gib"] for t in runs[p]], 2)
            + " / "
            + cell([t.get("relay_cpu_s_per_gib") for t in runs[p]], 2)
            for p in paths
            if p != "direct"
        ]
        tool = {"scp": "scp -s", "cat": "ssh cat"}.get(key[1], key[1])
        out.append(
            f"| {key[0]} ms | {tool} | {key[2][:2] if key[2] == 'upload' else 'down'} | "
            + " | ".join(row + cpu)
            + " |"
        )
    if results["connect"]:
        out += ["", "First connection: ProxyCommand start to sshd's first line on its stdout "
                "(median ms), and `ssh HOST true` (median ms):", ""]  # fmt: skip
        clients = [p for p in paths if p != "direct"]
        out.append(
            "| RTT | "
            + " | ".join(f"banner {p}" for p in clients)
            + " | "
            + " | ".join(f"ssh true {p}" for p in paths)
            + " |"
        )
        out.append("|" + "---|" * (1 + len(clients) + len(paths)))
        for rtt, c in results["connect"].items():
            out.append(
                f"| {rtt} ms | "
                + " | ".join(cell(c["banner_ms"][p]) for p in clients)
                + " | "
                + " | ".join(cell(c["ssh_true_ms"][p], 0) for p in paths)
                + " |"
            )
    if results["api"]:
        out += ["", "The Jupyter API (GET /api/status, kept-alive connection, no delay) idle and "
                "while `ssh cat` streams one download and one upload through the route (the "
                "laptop's ssh and ProxyCommands at niceness 19: on a real link they are on "
                "another machine):", "",
                "| install | idle p50 / p99 ms | loaded p50 / p99 ms | p99 loaded / idle | "
                "down / up MiB/s meanwhile | Jupyter / relay cores | CPU-s/GiB Jupyter / relays |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for label in labels:
            a = results["api"].get(label)
            if not a:
                continue
            i, lo = a["idle"], a["loaded"]
            out.append(
                f"| {label} | {i['p50_ms']} / {i['p99_ms']} | {lo['p50_ms']} / {lo['p99_ms']} | "
                f"{lo['p99_ms'] / i['p99_ms']:.1f}x | "
                f"{lo.get('down_mib_s')} / {lo.get('up_mib_s')} | "
                f"{lo['jupyter_cores']} / {lo.get('relay_cores')} | "
                f"{lo.get('jupyter_cpu_s_per_gib')} / {lo.get('relay_cpu_s_per_gib')} |"
            )
    if results["parallel"]:
        first = results["parallel"][0]
        out += ["", f"{first['count']} transfers at once (`ssh HOST cat`, no delay), MiB/s in "
                "all, and the cores busy meanwhile: the Jupyter process, the relays, sshd (all "
                "sessions), the clients (ssh and ProxyCommands):", "",
                "| dir | path | MiB/s | Jupyter cores | relay cores | sshd cores | client cores |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for p in results["parallel"]:
            c = p["cores"]
            out.append(
                f"| {p['direction']} | {p['path']} | {p['mib_s']}{'' if p['ok'] else ' [failed]'} "
                f"| {c.get('jupyter', '-')} | {c.get('relays', '-')} | {c.get('sshd', '-')} "
                f"| {c.get('client', '-')} |"
            )
    failed = [t for t in transfers if not t["ok"]]
    if failed:
        out += ["", "Failed: " + "; ".join(
            f"{t['rtt_ms']} ms {t['tool']} {t['direction']} {t['path']} #{t['rep']}: {t['failure']}"
            for t in failed)]  # fmt: skip
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--install", action="append", metavar="LABEL=VENV",
        help="a venv with jupyter-sshd-proxy installed, under a label (again for more); "
        "default: this Python's venv, as 'this'",
    )  # fmt: skip
    parser.add_argument("--websocat", help="default: the first install's bin/websocat")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rtts", default="0,20,60", help="ms, comma-separated")
    parser.add_argument("--tools", default="cat,scp,rsync", help="cat: `ssh HOST cat`")
    parser.add_argument("--directions", default="download,upload")
    parser.add_argument("--connect-reps", type=int, default=15)
    parser.add_argument("--api-requests", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=4, help="transfers at once; 0: none")
    parser.add_argument("--parallel-mib", type=int, default=256, help="size of each")
    parser.add_argument("--expect-mib-s", type=float, default=150, help="for the time-outs")
    parser.add_argument("--quick", action="store_true", help="16 MiB, 1 rep, 0 and 20 ms")
    parser.add_argument("--out", help="report file (.md; and .json beside it)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run it as root: it makes network namespaces and iptables rules")
    for tool in ("ip", "ssh", "scp", "rsync", "cmp"):
        if not shutil.which(tool):
            parser.error(f"{tool} not found")
    if not (shutil.which("iptables-legacy") or shutil.which("iptables")):
        parser.error("iptables not found; install it with: apt-get install iptables")
    if args.quick:
        args.size_mib, args.reps, args.rtts = 16, 1, "0,20"
        args.connect_reps, args.api_requests, args.parallel_mib = 6, 100, 32
    args.installs = []
    for item in args.install or [f"this={sys.prefix}"]:
        label, _, venv = item.partition("=")
        if not venv or not Path(venv, "bin/jupyter-server").exists():
            parser.error(f"--install {item}: want LABEL=VENV, a venv with jupyter-server in it")
        args.installs.append((label, Path(venv).resolve()))
    args.rtts = [int(x) for x in args.rtts.split(",") if x]
    args.tools = [x for x in args.tools.split(",") if x in TOOLS]
    args.directions = [x for x in args.directions.split(",") if x in DIRECTIONS]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"/tmp/jsp-wan-{stamp}.md")
    bench = Run(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        code = bench.run()
    finally:
        text = report(bench.results)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(bench.results, indent=1))
        print(text)  # noqa: T201
        say(f"report: {out}, figures: {out.with_suffix('.json')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
