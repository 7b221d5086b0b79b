"""Differential fuzzing of authorized_keys lines: jupyter_sshd_proxy_client.keys
against the real sshd (oracle.py).

Mutations of valid lines with real keys (options, quotes, backslashes, commas,
tabs, Unicode spaces, NUL, CR, type-name and base64 variants, decoy keys in
options and comments). Prints HIDDEN (sshd lets the key in, jupyter_sshd_proxy_client.keys does not
list it) and LINE differences; PHANTOM (listed, never let in) and POST-PHANTOM
(parse_key accepts, sshd refuses) go to findings.jsonl in ATTACK_WORK.
"""

import base64
import json
import os
import random
import struct
import sys
import time

from jupyter_sshd_proxy_client.errors import BadKeyError
from jupyter_sshd_proxy_client.keys import grammar

from . import oracle

R = random.Random(int(os.environ.get("SEED", "1")))
ED = [n for n in oracle.NAMES if n.startswith("e")]
OTHER = [n for n in oracle.NAMES if not n.startswith("e")]


def S(b):
    return struct.pack(">I", len(b)) + b


def fields(blob):
    out, pos = [], 0
    while pos < len(blob):
        (length,) = struct.unpack_from(">I", blob, pos)
        out.append(blob[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return out


def blob_variant(name):
    b64 = oracle.BLOB[name]
    raw = base64.b64decode(b64)
    f = fields(raw)
    choice = R.randrange(16)
    if choice < 6:
        return b64
    if choice == 6:  # whitespace inside
        i = R.randrange(1, len(b64))
        return b64[:i] + R.choice(["\v", "\f", "\r", "\v\f", "\x0b\r"]) + b64[i:]
    if choice == 7:  # padding dropped / added
        return R.choice(
            [
                b64.rstrip("="),
                b64 + "=",
                b64 + "==",
                b64.rstrip("=") + "=",
                b64 + "AAAA",
                b64 + "AA==",
                b64 + "\r",
            ]
        )
    if choice == 8:  # short type name in data
        t = f[0]
        short = {
            b"ssh-ed25519": [
                b"ED25519",
                b"ed25519",
                b"Ed25519",
                b"ssh-ed25519\0",
                b"ED25519\0",
                b"ed25519-sk",
                b"ssh-ed25519\0\0",
            ],
            b"ssh-rsa": [b"RSA", b"rsa", b"rsa-sha2-256", b"rsa-sha2-512", b"ssh-rsa\0", b"RSA\0"],
        }.get(t, [b"ECDSA", t + b"\0", b"ecdsa", b"sk-" + t])
        return base64.b64encode(S(R.choice(short)) + b"".join(S(x) for x in f[1:])).decode()
    if choice == 9:  # extra data
        return base64.b64encode(raw + R.choice([b"\0", b"\0\0\0\0", S(b"x")])).decode()
    if choice == 10 and f[0] == b"ssh-rsa":  # padded mpints
        return base64.b64encode(
            S(f[0]) + S(b"\0" * R.randrange(1, 4) + f[1]) + S(b"\0" + f[2])
        ).decode()
    if choice == 11 and f[0].startswith(b"ecdsa"):
        return base64.b64encode(S(f[0]) + S(f[1] + R.choice([b"\0", b""])) + S(f[2])).decode()
    if choice == 12:  # spare bits
        s = b64.rstrip("=")
        pad = len(b64) - len(s)
        if pad:
            c = s[-1]
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            return s[:-1] + alphabet[(alphabet.index(c) + 1) % 64] + "=" * pad
    if choice == 13:  # whitespace in padding
        s = b64.rstrip("=")
        pad = len(b64) - len(s)
        if pad == 2:
            return s + "=" + R.choice(["\v", "\f", "\r"]) + "="
        if pad == 1:
            return s + "=\v"
    if choice == 14:
        return base64.b64encode(raw).decode().replace("A", "A\v", 1)
    return b64


def type_variant(name):
    t = oracle.TYPE[name]
    c = R.randrange(14)
    if c < 9:
        return t
    if t == "ssh-rsa":
        return R.choice(
            [
                "rsa-sha2-256",
                "rsa-sha2-512",
                "SSH-RSA",
                "ssh-rsa-cert-v01@openssh.com",
                "ssh-dss",
                "RSA",
            ]
        )
    if t == "ssh-ed25519":
        return R.choice(
            [
                "SSH-ED25519",
                "ED25519",
                "ssh-ed25519-cert-v01@openssh.com",
                "sk-ssh-ed25519@openssh.com",
                "ssh-ed25519\v",
                "ssh-ed25519 ",
            ]
        )
    return R.choice(
        [
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "ECDSA",
            "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
            t + "-cert-v01@openssh.com",
        ]
    )


def ws():
    return R.choice([" ", " ", " ", "\t", "  ", " \t", "\t\t"])


VALUES = [
    "*",
    "true",
    "echo hi",
    'echo \\"q\\"',
    '\\"',
    "a b",
    "a\tb",
    '*,\\" x',
    "x-cert-v01@openssh.com y",
    "-cert-v01@openssh.com ",
    "ssh-ed25519 DECOY",
    "DECOYLINE",
    "A=1",
    "A=",
    "=1",
    "A_b9=x y",
    "A-B=1",
    "20991231",
    "20991231Z",
    "209912312359",
    "20991231235959",
    "20991231235959UTC",
    "20991301",
    "2099123",
    "19700101Z",
    "19000101",
    "00010101",
    "2099 1231",
    " 2099123",
    "20991231utc",
    "localhost:22",
    "*:*",
    "8080",
    "[::1]:22",
    "localhost",
    "host:0",
    "host:65536",
    "any",
    "1",
    "+1",
    "0x10",
    " 1",
    "1 ",
    "2147483645",
    "2147483646",
    "\\",
    "a\\",
    '\\\\"',
    "é",
    "\u00a0",
    "\u2028",
    "x,y",
    "127.0.0.1",
    "10.0.0.1",
    "127.0.0.0/8",
    "127.0.0.1/33",
    "!127.0.0.1,*",
    "*,!127.0.0.1",
    "principal",
    "#",
    "",
    "cert-authority",
]
FLAGS = [
    "restrict",
    "cert-authority",
    "port-forwarding",
    "agent-forwarding",
    "x11-forwarding",
    "touch-required",
    "verify-required",
    "pty",
    "user-rc",
    "no-pty",
    "no-port-forwarding",
    "no-agent-forwarding",
    "no-x11-forwarding",
    "no-touch-required",
    "no-verify-required",
    "no-user-rc",
    "no-restrict",
    "no-cert-authority",
    "ptyx",
    "restrictive",
    "",
    "unknown",
    "no-",
    "PTY",
    "No-Pty",
    "RESTRICT",
]
VNAMES = [
    "command",
    "principals",
    "from",
    "expiry-time",
    "environment",
    "permitopen",
    "permitlisten",
    "tunnel",
    "COMMAND",
    "From",
    "Expiry-Time",
    "Environment",
    "PermitOpen",
    "commandx",
    "no-command",
]


def case(s):
    return "".join(ch.upper() if R.random() < 0.3 else ch for ch in s)


def option(decoy_line):
    if R.random() < 0.45:
        return case(R.choice(FLAGS)) if R.random() < 0.3 else R.choice(FLAGS)
    name = R.choice(VNAMES)
    v = R.choice(VALUES).replace("DECOYLINE", decoy_line).replace("DECOY", decoy_line.split()[1])
    q = R.random()
    if q < 0.8:
        return f'{name}="{v}"'
    if q < 0.9:
        return f"{name}={v}"
    return f'{name}="{v}'


def make_line(main, decoy):
    decoy_line = f"{oracle.TYPE[decoy]} {oracle.BLOB[decoy]}"
    parts = []
    if R.random() < 0.15:
        parts.append(R.choice([" ", "\t", " \t", "\v", "\f", "\r", "\u00a0", "#", "\ufeff"]))
    if R.random() < 0.55:
        opts = ",".join(option(decoy_line) for _ in range(R.randrange(1, 4)))
        parts.append(opts + ws())
    parts.append(type_variant(main) + ws() + blob_variant(main))
    c = R.random()
    if c < 0.3:
        parts.append(
            ws() + R.choice(["me@laptop", "a b c", decoy_line, "#x", '"', 'x"y', "é", "\u2028z"])
        )
    parts.append(R.choice(["\n"] * 8 + ["\r\n", "", " \n", "\t\n", "\r\r\n"]))
    line = "".join(parts)
    if not line.endswith("\n"):
        line += "\n"
    return line


CHARS = [
    " ",
    "\t",
    '"',
    "\\",
    ",",
    "=",
    "\r",
    "\v",
    "\f",
    "\0",
    "\u00a0",
    "\u2028",
    "\x85",
    "#",
    "é",
    "\n",
    "-",
    "A",
    "\ufeff",
]


def mutate(line):
    body = line[:-1]
    for _ in range(R.randrange(1, 3)):
        if not body:
            break
        i = R.randrange(len(body) + 1)
        op = R.randrange(4)
        if op == 0:
            body = body[:i] + R.choice(CHARS) + body[i:]
        elif op == 1 and i < len(body):
            body = body[:i] + body[i + 1 :]
        elif op == 2 and i < len(body):
            body = body[:i] + R.choice(CHARS) + body[i + 1 :]
        else:
            j = R.randrange(len(body) + 1)
            body = body[:i] + body[min(i, j) : max(i, j)] + body[i:]
    return body + "\n"


def keys_py(data: bytes):
    """per line: (pool name or fp, cert_authority, options) or None, using the
    package's own line split"""
    out, slow = [], []
    for raw in split(data):
        t = time.perf_counter()
        try:
            k = grammar.parse_file_line(raw.decode("utf-8", "surrogateescape"))
        except BadKeyError:
            k = "BADKEY-ESCAPED"
        except Exception as e:
            k = "CRASH " + repr(e)
        dt = time.perf_counter() - t
        if dt > 0.05:
            slow.append((dt, raw[:200]))
        out.append(k)
    return out, slow


def split(data):
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def run(batches, per_batch=20, log=None):
    log = log or os.path.join(oracle.WORK, "findings.jsonl")
    findings = 0
    for _ in range(batches):
        names = ED[:]
        R.shuffle(names)
        others = OTHER[:]
        lines, mains = [], []
        for _ in range(per_batch):
            main = others.pop() if others and R.random() < 0.3 else names.pop()
            decoy = names.pop()
            line = make_line(main, decoy)
            if R.random() < 0.5:
                line = mutate(line)
            lines.append(line)
            mains.append((main, decoy))
        data = "".join(lines).encode("utf-8", "surrogatepass")
        parsed, slow = keys_py(data)
        for s in slow:
            print("SLOW", s)
        expected = {}
        listed_ca = {}
        for idx, k in enumerate(parsed, 1):
            if isinstance(k, str):
                print("CRASH/ESCAPE", k, split(data)[idx - 1])
                findings += 1
                continue
            if k is None:
                continue
            name = oracle.BY_FP.get(k.fingerprint, k.fingerprint)
            if k.cert_authority:
                listed_ca.setdefault(name, idx)
                continue
            expected.setdefault(name, idx)
        got = oracle.granted(data)
        rawlines = split(data)
        for idx, raw in enumerate(rawlines, 1):
            text = raw.decode("utf-8", "surrogateescape").rstrip("\n")
            try:
                sk = grammar.parse_key(text, allow_options=True)
            except BadKeyError:
                continue
            except Exception as e:
                print("STRICT-CRASH", repr(e), repr(text[:200]))
                continue
            name = oracle.BY_FP.get(sk.fingerprint)
            if name is None or sk.cert_authority:
                continue
            if got.get(name) != idx:
                rec = {
                    "kind": "POST-PHANTOM",
                    "key": name,
                    "line": text.encode("unicode_escape").decode(),
                }
                with open(log, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if got != expected:
            rawlines = split(data)
            for name in set(got) | set(expected):
                if got.get(name) != expected.get(name):
                    li = got.get(name) or expected.get(name)
                    rec = {
                        "key": name,
                        "sshd_line": got.get(name),
                        "keyspy_line": expected.get(name),
                        "line": rawlines[li - 1]
                        .decode("utf-8", "surrogateescape")
                        .encode("unicode_escape")
                        .decode(),
                    }
                    rec["kind"] = (
                        "HIDDEN"
                        if got.get(name) and not expected.get(name)
                        else ("PHANTOM" if not got.get(name) else "LINE")
                    )
                    if rec["kind"] != "PHANTOM":
                        print("DIFF", json.dumps(rec))
                    findings += 1
                    with open(log, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    return findings


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    t = time.time()
    try:
        print("findings", run(n), "in", time.time() - t)
    finally:
        oracle.stop()
