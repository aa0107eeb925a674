#!/usr/bin/env python3
"""Who wakes ma-idp's HTTP workers during the benchmark's password sign-in storm, and how long
they then wait for a CPU: the analysis behind BENCHMARKS.md's "JWKS during the sign-in storm".

Record the scheduler's trace over one sign-in scenario (as root; perf from Debian's linux-perf):

    perf record -a -e sched:sched_switch,sched:sched_wakeup -o sched.data -- sleep 85 &
    ./target/release/ma-idp-bench --backend postgres --scenarios sign-in --no-build
    perf script -i sched.data -F comm,pid,tid,cpu,time,event,trace > sched.txt
    python3 bench/sched_waits.py sched.txt

The ma-idp server is the process whose `argon2-*` threads switched most; the storm is the
seconds in which a `jwks-probe` thread ran while those hash threads were busy.
"""
import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
WAKE = re.compile(r"comm=(.*?) pid=(\d+)")
SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*==> next_comm=(.*?) next_pid=(\d+)")


def pct(xs, q):
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1e3


def main(path):
    rows = [m.groups() for m in map(LINE.match, open(path, errors="replace")) if m]
    if not rows:
        sys.exit(f"{path}: no sched_switch/sched_wakeup lines (see this file's doc)")
    hashing = collections.Counter(r[1] for r in rows if r[0].startswith("argon2"))
    if not hashing:
        sys.exit("no argon2-* threads in the trace: was ma-idp hashing?")
    server = hashing.most_common(1)[0][0]
    busy = collections.Counter(
        int(float(r[4])) for r in rows if r[0].startswith("argon2") and r[1] == server
    )
    probing = {int(float(r[4])) for r in rows if r[0].startswith("jwks-probe")}
    storm = {s for s in probing if busy[s] > 200}
    if not storm:
        sys.exit("no second with both the JWKS probe and ma-idp's hash threads running")
    workers = {r[2] for r in rows if r[1] == server and r[0].startswith("actix-rt")}
    print(f"ma-idp pid {server}; storm: {len(storm)} s ({min(storm)}-{max(storm)})")

    woken = {}
    waits = collections.defaultdict(list)
    long_after = collections.Counter()
    wakers = collections.Counter()
    for comm, pid, tid, _cpu, t, ev, rest in rows:
        t = float(t)
        inside = int(t) in storm
        if ev == "sched_wakeup":
            m = WAKE.search(rest)
            if not m:
                continue
            woken[m.group(2)] = t
            target = m.group(2)
            if inside and (target in workers or target == server):
                who = "main thread" if target == server else "HTTP worker"
                if tid == server:
                    src = "ma-idp main thread"
                elif tid in workers:
                    src = "another HTTP worker"
                else:
                    src = re.sub(r"-\d+$", "", comm)
                wakers[(who, src)] += 1
        elif ev == "sched_switch":
            m = SWITCH.search(rest)
            if not m:
                continue
            prev, _pp, nxt, npid = m.groups()
            if npid not in woken:
                continue
            waited = t - woken.pop(npid)
            if not inside:
                continue
            kind = "HTTP worker" if npid in workers else "JWKS probe" if nxt.startswith("jwks-probe") else None
            if kind:
                waits[kind].append(waited)
                if waited > 0.001:
                    long_after[re.sub(r"[-/:]\S*$", "", prev)] += 1

    print("\nwake-ups of ma-idp's HTTP workers and main thread during the storm, by waker:")
    for (who, src), n in wakers.most_common():
        print(f"  {n:6}  {who} woken by {src}")
    print("\nfrom wake-up to running:")
    for kind, xs in sorted(waits.items()):
        xs.sort()
        print(
            f"  {kind}: {len(xs)} wake-ups, p50 {pct(xs, .5):.3f} ms, p99 {pct(xs, .99):.3f} ms, "
            f"p99.9 {pct(xs, .999):.3f} ms, max {xs[-1] * 1e3:.3f} ms"
        )
    print(f"\nwaits over 1 ms ({sum(long_after.values())}), by the thread that ran just before:")
    for prev, n in long_after.most_common(12):
        print(f"  {n:4}  {prev}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
