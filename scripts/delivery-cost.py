#!/usr/bin/env python3
"""delivery-cost.py: what one delivered gateway event costs a cluster.

Runs a command (a `chorus loadtest chat` against the cluster) and samples,
once a second, every node's /metrics and every NATS server's monitoring
endpoint (/connz). Over the steady part of the send window (where deliveries
run at half their peak rate or more, less 3 s at either end) it prints, per delivered event:
the nodes' CPU time, the NATS servers' CPU time, the bytes and messages the
nodes exchanged with NATS, and the bytes of the session-copy stream.

  scripts/delivery-cost.py --nodes 8081,8082,8083 --nats 8221,8222,8223 \\
      --nats-pids 'pgrep -f nats-server' -- chorus loadtest chat ...

NATS servers need their monitoring port (`http: 127.0.0.1:8221` in the
config); the nodes' metrics are on their --http address.
"""
import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request


def get(url):
    try:
        return urllib.request.urlopen(url, timeout=1).read().decode()
    except OSError:
        return None


def node_sample(port):
    text = get(f"http://127.0.0.1:{port}/metrics")
    want = ("chorus_gateway_deliveries_total", "chorus_process_cpu_seconds_total",
            "chorus_gateway_replica_bytes_total")
    m = dict.fromkeys(want, 0.0)
    for line in (text or "").splitlines():
        k, _, v = line.rpartition(" ")
        if k in m:
            m[k] = float(v)
    return m


def nats_sample(port):
    text = get(f"http://127.0.0.1:{port}/connz?limit=10000")
    if text is None:
        return 0, 0
    conns = json.loads(text)["connections"]
    return (sum(c["in_bytes"] + c["out_bytes"] for c in conns),
            sum(c["in_msgs"] + c["out_msgs"] for c in conns))


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / 100.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", required=True, help="comma-separated HTTP ports of the chorus nodes on 127.0.0.1")
    ap.add_argument("--nats", required=True, help="comma-separated monitoring ports of the NATS servers")
    ap.add_argument("--nats-pids", default="pgrep -x nats-server", help="shell command printing the NATS servers' PIDs")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the load command")
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("a load command is required after --")
    nodes = [int(p) for p in a.nodes.split(",")]
    nats = [int(p) for p in a.nats.split(",")]
    pids = subprocess.run(a.nats_pids, shell=True, capture_output=True, text=True).stdout.split()

    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            ns = [node_sample(p) for p in nodes]
            cz = [nats_sample(p) for p in nats]
            samples.append({
                "t": time.time(),
                "deliveries": sum(n["chorus_gateway_deliveries_total"] for n in ns),
                "cpu": sum(n["chorus_process_cpu_seconds_total"] for n in ns),
                "replica": sum(n["chorus_gateway_replica_bytes_total"] for n in ns),
                "bytes": sum(c[0] for c in cz),
                "msgs": sum(c[1] for c in cz),
                "nats_cpu": cpu_seconds(pids),
            })
            done.wait(1)

    th = threading.Thread(target=sample)
    th.start()
    rc = subprocess.call(cmd)
    done.set()
    th.join()

    # The send window is where deliveries run at half their peak rate or
    # more (identifies deliver too, but slowly); its first and last 3 s
    # are left out.
    rate = [0] + [samples[i]["deliveries"] - samples[i - 1]["deliveries"] for i in range(1, len(samples))]
    moving = [i for i, r in enumerate(rate) if r > 0 and r >= max(rate) / 2]
    if len(moving) < 12:
        sys.exit("delivery-cost: fewer than 12 seconds of deliveries; run the load longer")
    a0, b0 = samples[moving[0] + 3], samples[moving[-1] - 3]
    d = b0["deliveries"] - a0["deliveries"]
    secs = b0["t"] - a0["t"]
    per = lambda k: (b0[k] - a0[k]) / d
    print(f"window {secs:.0f} s, {d:.0f} deliveries ({d / secs:.0f}/s)")
    print(f"chorus CPU     {1e6 * per('cpu'):6.1f} us/delivery ({(b0['cpu'] - a0['cpu']) / secs:.2f} cores)")
    print(f"NATS CPU       {1e6 * per('nats_cpu'):6.1f} us/delivery")
    print(f"NATS clients   {per('bytes'):6.1f} B/delivery, {per('msgs'):.3f} messages/delivery (nodes to and from NATS)")
    print(f"copy stream    {per('replica'):6.1f} B/delivery")
    sys.exit(rc)


if __name__ == "__main__":
    main()
