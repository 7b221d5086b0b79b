"""Differential oracle: which keys of a pool does the real sshd let in for an
authorized_keys file, and from which line? A throwaway sshd -D on 127.0.0.1 (so
from= sees 127.0.0.1, as in the product) with AuthenticationMethods
publickey,publickey,... so that one ssh connection tries every key; sshd's
"Accepted key ... found at FILE:LINE" log lines are the ground truth. Keys that
sshd never got to try (an "Inconsistent authentication options" aborts the
chain) are tried again one by one.

Not a test (pytest does not collect it). Run as root or as the user whose
login it checks: ATTACK_WORK=/some/private/dir python -m fuzzing.fuzz_keys 40
"""

import base64
import hashlib
import os
import re
import socket
import subprocess
import time

WORK = os.environ.get("ATTACK_WORK", "/tmp/attack-key-lines")
POOL = os.path.join(WORK, "pool")
os.makedirs(POOL, mode=0o700, exist_ok=True)
for _name, _args in [
    *((f"e{i:02d}", ["-t", "ed25519"]) for i in range(40)),
    *((f"r{i}", ["-t", "rsa", "-b", "2048"]) for i in range(3)),
    *((f"p{b}", ["-t", "ecdsa", "-b", str(b)]) for b in (256, 384, 521)),
    ("../hk", ["-t", "ed25519"]),
]:
    if not os.path.exists(os.path.join(POOL, _name)):
        subprocess.run(
            ["ssh-keygen", "-q", *_args, "-N", "", "-C", _name, "-f", os.path.join(POOL, _name)],
            check=True,
        )
NAMES = sorted(n for n in os.listdir(POOL) if not n.endswith(".pub"))


def fp_of_blob(b64):
    blob = base64.b64decode(b64)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _read(path: str) -> str:
    with open(path) as stream:
        return stream.read()


PUB = {n: _read(f"{POOL}/{n}.pub").strip() for n in NAMES}
TYPE = {n: PUB[n].split()[0] for n in NAMES}
BLOB = {n: PUB[n].split()[1] for n in NAMES}
FP = {n: fp_of_blob(BLOB[n]) for n in NAMES}
BY_FP = {v: k for k, v in FP.items()}
AK = os.path.join(WORK, "ak")
LOG = os.path.join(WORK, "sshd.log")
CFG = f"""HostKey {WORK}/hk
ListenAddress 127.0.0.1:{{port}}
AuthorizedKeysFile {AK}
StrictModes no
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxAuthTries 500
MaxStartups 100
AuthenticationMethods {",".join(["publickey"] * (len(NAMES) + 1))}
LogLevel VERBOSE
"""
_daemon = None
_port = None


def start():
    global _daemon, _port
    if _daemon and _daemon.poll() is None:
        return
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _port = s.getsockname()[1]
    s.close()
    with open(AK + ".cfg", "w") as f:
        f.write(CFG.format(port=_port))
    with open(LOG, "ab") as log:  # sshd keeps its own copy of the descriptor
        _daemon = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", AK + ".cfg"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", _port), 1).close()
            return
        except OSError:
            time.sleep(0.05)


def stop():
    if _daemon and _daemon.poll() is None:
        _daemon.terminate()
        _daemon.wait(5)


def granted(data: bytes, names=None):
    """{pool key name: line number} that sshd lets in with this file content."""
    start()
    names = names or NAMES
    with open(AK, "wb") as f:
        f.write(data)
    before = os.path.getsize(LOG)
    argv = [
        "ssh",
        "-F",
        "none",
        "-p",
        str(_port),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ]
    for n in names:
        argv += ["-i", f"{POOL}/{n}"]
    known_hosts = os.path.join(WORK, "known_hosts")  # the oracle's own host key, pinned
    with open(known_hosts, "w") as f:
        f.write(f"[127.0.0.1]:{_port} " + " ".join(_read(f"{WORK}/hk.pub").split()[:2]) + "\n")
    argv += [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "LogLevel=QUIET",
        "root@127.0.0.1",
        "true",
    ]
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    time.sleep(0.05)
    with open(LOG, "rb") as f:
        f.seek(before)
        text = f.read().decode(errors="replace")
    got = {}
    for m in re.finditer(r"Accepted key \S+ (SHA256:\S+) found at \S+:(\d+)", text):
        got.setdefault(BY_FP[m.group(1)], int(m.group(2)))
    tested = set(got) | {
        BY_FP[m.group(1)]
        for m in re.finditer(r"Failed publickey for \S+ from .* ssh2: \S+ (SHA256:\S+)", text)
    }
    for n in names:
        if n not in tested and len(names) > 1:
            got.update({k: v for k, v in granted(data, [n]).items()})
    return got
