#!/usr/bin/env python3
"""A many-region Fly.io deployment, simulated on this machine (run by scripts/fly-sim.sh).

Linux network namespaces with IPv6 addresses stand in for Fly machines, all on one bridge this
script creates (Fly's 6PN); `/etc/netns/<ns>/hosts` answers `<region>.<app>.internal` with the
region's machines, as Fly's internal DNS does. Each node runs inside its namespace with exactly
the variables a Fly machine of fly/fly.toml gets: the template's [env], the FLY_* variables, and
the secrets fly/deploy.sh sets (KAFKA_SEEDS) and `fly storage create` sets (BUCKET_NAME,
AWS_ENDPOINT_URL_S3, AWS_REGION, keys). No other cluster settings: each node configures itself.
One Kafka-protocol broker (nisshi) and one S3 server (s3s-fs) listen on the bridge.

It checks (3 regions x 2 machines, then a fourth region): every machine becomes ready; each region's gossip holds its own machines only, with
IPv6 addresses; a write in one region is read in every region (HTTP and redis-cli), and reads are
answered inside the region; after kill -9 of a machine its region serves everything again; a
region added later starts from S3 snapshots (after the log's head is deleted) and agrees with the
others. Every namespace, link and hosts file it made is removed at the end, also on failure.
Traffic stays on the bridge and inside the namespaces.

    scripts/fly-sim.sh    # FIRESCROLL_BIN, NISSHI_BIN, S3S_FS_BIN name the binaries
"""

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "firescroll-sim"
TAG = os.environ.get("FLY_SIM_TAG") or f"{os.getpid() % 0xFFFF:04x}"  # 4 hex digits
PREFIX = f"fd5e:0:{TAG}"
BRIDGE = f"fsb{TAG}"
HOST_IP = f"{PREFIX}::1"
REGIONS = ["ams", "iad", "sin", "syd"]  # syd is added later, from snapshots
MACHINES_PER_REGION = 2
home = Path.home()
FIRESCROLL = os.environ.get("FIRESCROLL_BIN", str(home / ".cache/firescroll/target/debug/firescroll"))
NISSHI = os.environ.get("NISSHI_BIN", str(home / ".cache/nisshi-0.8.1/bin/nisshi"))
S3S_FS = os.environ.get("S3S_FS_BIN", str(home / ".cache/s3s-fs-0.14.1/bin/s3s-fs"))

work = Path(tempfile.mkdtemp(prefix="fly-sim-"))
namespaces, links, processes = [], [], {}


def log(message):
    print(f"fly-sim: {message}", flush=True)


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def free_port():
    with socket.socket(socket.AF_INET6) as s:
        s.bind((HOST_IP, 0))
        return s.getsockname()[1]


class Machine:
    def __init__(self, region, index, number):
        self.region = region
        self.ns = f"fs{TAG}-{region}{index}"
        self.ip = f"{PREFIX}::{number:x}"
        self.id = f"{number:02x}{TAG}5e7d9a01"  # 14 hex digits, like a Fly machine id
        self.data = work / self.ns / "data"
        self.log_path = work / f"{self.ns}.log"
        self.env = {}
        self.restarts = 0

    def url(self, path, port=8190):
        return f"http://[{self.ip}]:{port}{path}"

    def __repr__(self):
        return f"{self.region}/{self.id}"


def http(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def wait(what, check, timeout=120, machine=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = machine.log_path.read_text()[-4000:] if machine and machine.log_path.exists() else ""
    raise SystemExit(f"fly-sim: FAILED: {what} (waited {timeout} s)\n{tail}")


def expect(ok, message):
    if not ok:
        raise SystemExit(f"fly-sim: FAILED: {message}")


def setup_network():
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    links.append(BRIDGE)
    sh("ip", "-6", "addr", "add", f"{HOST_IP}/64", "dev", BRIDGE, "nodad")
    sh("ip", "link", "set", BRIDGE, "up")


def add_machine(machine, all_machines, services):
    ns = machine.ns
    sh("ip", "netns", "add", ns)
    namespaces.append(ns)
    host_side = f"fv{TAG}{len(namespaces)}"
    sh("ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", ns)
    links.append(host_side)
    sh("ip", "link", "set", host_side, "master", BRIDGE, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "-6", "addr", "add", f"{machine.ip}/64", "dev", "eth0", "nodad")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    write_hosts(all_machines)
    config = tomllib.loads((ROOT / "fly/fly.toml").read_text())
    env = {k: str(v) for k, v in config["env"].items()}
    env.update(
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "DB_PATH": str(machine.data),  # the machine's volume
            "LOG_FORMAT": "text",
            "FLY_APP_NAME": APP,
            "FLY_REGION": machine.region,
            "FLY_MACHINE_ID": machine.id,
            "FLY_PRIVATE_IP": machine.ip,
            "FLY_PROCESS_GROUP": "app",
            "FLY_VM_MEMORY_MB": "1024",
        }
    )
    env.update(services)
    machine.data.mkdir(parents=True, exist_ok=True)
    machine.env = env
    start(machine)


def start(machine):
    out = open(machine.log_path, "ab")
    processes[machine.ns] = subprocess.Popen(
        ["ip", "netns", "exec", machine.ns, FIRESCROLL], env=machine.env, stdout=out, stderr=out,
        stdin=subprocess.DEVNULL,
    )


def up(machine):
    """Ready, restarting a machine whose process exited, as Fly's restart policy does (a node
    that cannot reach the broker within its bootstrap timeout exits and is started again)."""
    if processes[machine.ns].poll() is not None:
        machine.restarts += 1
        expect(machine.restarts <= 3, f"{machine} exited {machine.restarts} times")
        log(f"{machine} exited (code {processes[machine.ns].returncode}); restarting it, as Fly would")
        start(machine)
        return False
    return ready(machine)


def write_hosts(all_machines):
    """Fly's internal DNS: <region>.<app>.internal names a region's machines, <id>.vm.<app>.internal one."""
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    for m in all_machines:
        lines.append(f"{m.ip} {m.region}.{APP}.internal")
        lines.append(f"{m.ip} {m.id}.vm.{APP}.internal")
    for m in all_machines:
        if m.ns in namespaces:
            path = Path("/etc/netns") / m.ns / "hosts"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")


def cleanup():
    for p in processes.values():
        try:
            p.kill()
        except ProcessLookupError:
            pass
    for p in processes.values():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    # `ip netns exec` runs the node as its child: kill anything left in the namespaces too.
    for ns in namespaces:
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    for link in links:
        sh("ip", "link", "del", link, check=False)
    if os.environ.get("FLY_SIM_KEEP"):
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def on_bridge(addr):
    """Whether `[ipv6]:port` is an address of the simulated 6PN (compared as addresses: the
    node prints them canonically, without leading zeros)."""
    host = addr.rsplit("]", 1)[0].lstrip("[")
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(f"{PREFIX}::/64")
    except ValueError:
        return False


def ready(m):
    return http("GET", m.url("/ready"), timeout=2)[0] == 200


def partitions(m):
    status, body = http("GET", m.url("/debug/partitions", 8191))
    return json.loads(body)["partitions"] if status == 200 else []


def metric(m, name):
    status, body = http("GET", m.url("/metrics", 8191))
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run():
    for tool in [FIRESCROLL, NISSHI, S3S_FS]:
        expect(Path(tool).exists(), f"{tool} is missing (scripts/test.sh installs and builds it)")
    expect(shutil.which("ip") is not None, "iproute2's `ip` is required")
    setup_network()
    broker_port, s3_port = free_port(), free_port()
    (work / "broker").mkdir()
    (work / "s3" / "snapshots").mkdir(parents=True)
    broker_url = f"tcp://[{HOST_IP}]:{broker_port}"
    processes["broker"] = subprocess.Popen(
        [NISSHI, "broker", "--listener-url", broker_url, "--advertised-listener-url", broker_url,
         "--storage-engine", "sqlite://nisshi.db", "--group-initial-rebalance-delay", "0s"],
        cwd=work / "broker", stdout=open(work / "broker.log", "ab"), stderr=subprocess.STDOUT,
    )
    processes["s3"] = subprocess.Popen(
        [S3S_FS, "--host", HOST_IP, "--port", str(s3_port), "--access-key", "tid_sim", "--secret-key", "tsec_sim", str(work / "s3")],
        stdout=open(work / "s3.log", "ab"), stderr=subprocess.STDOUT,
    )
    for port in [broker_port, s3_port]:
        wait(f"port {port} on the bridge", lambda: socket.socket(socket.AF_INET6).connect_ex((HOST_IP, port)) == 0, 30)
    # What fly/deploy.sh sets as secrets and `fly storage create` sets on the app.
    services = {
        "KAFKA_SEEDS": f"[{HOST_IP}]:{broker_port}",
        "BUCKET_NAME": "snapshots",
        "AWS_ENDPOINT_URL_S3": f"http://[{HOST_IP}]:{s3_port}",
        "AWS_REGION": "auto",
        "AWS_ACCESS_KEY_ID": "tid_sim",
        "AWS_SECRET_ACCESS_KEY": "tsec_sim",
        # What fly/README.md has every deploy export: the machines sign their gossip.
        "GOSSIP_KEYS": secrets.token_urlsafe(32),
    }
    fleet = {
        region: [Machine(region, i + 1, r * 16 + i + 2) for i in range(MACHINES_PER_REGION)]
        for r, region in enumerate(REGIONS)
    }
    everyone = [m for ms in fleet.values() for m in ms]
    first, later = REGIONS[:3], REGIONS[3]
    for region in first:
        for m in fleet[region]:
            add_machine(m, everyone, services)
    for region in first:
        for m in fleet[region]:
            wait(f"{m} ready", lambda m=m: up(m), 180, m)
    log(f"regions {', '.join(first)} up: {MACHINES_PER_REGION} machines each, configured from FLY_* alone")

    # Each region's gossip holds its own machines only, at their 6PN (IPv6) addresses.
    for region in first:
        ids = sorted(m.id for m in fleet[region])
        for m in fleet[region]:
            def region_members(m=m):
                status, body = http("GET", m.url("/debug/cluster", 8191))
                view = json.loads(body) if status == 200 else {"members": []}
                return sorted(x["instance_id"] for x in view["members"] if x["state"] == "alive") == ids and all(
                    on_bridge(x["api"]) for x in view["members"])
            wait(f"{m} sees exactly its region's machines over IPv6", region_members, 60, m)
    log("gossip: one ring per region, members at [fd..]:port addresses")

    # Each region serves every partition between its machines.
    total = int(tomllib.loads((ROOT / "fly/fly.toml").read_text())["env"]["PARTITIONS"])
    def serves_all(region):
        owned = [p["partition"] for m in fleet[region] if processes[m.ns].poll() is None for p in partitions(m)]
        return sorted(owned) == list(range(total))
    for region in first:
        wait(f"{region} serves all {total} partitions", lambda region=region: serves_all(region), 120)

    # A write in ams is read in every region, on every machine.
    writer = fleet["ams"][0]
    records = [{"pk": f"route:/svc{i}", "sk": "", "data": {"upstream": f"10.0.0.{i}", "weight": i}} for i in range(64)]
    status, body = http("POST", writer.url("/records/put"), {"Records": records})
    expect(status == 200, f"write in ams: {status} {body}")
    positions = json.loads(body)["Positions"]
    proxied_before = {m.ns: metric(m, "firescroll_proxied_reads_total") for r in first for m in fleet[r]}
    for region in first:
        for m in fleet[region]:
            status, body = http("POST", m.url("/records/get"), {
                "Records": [{"pk": r["pk"], "sk": ""} for r in records], "min_offsets": positions})
            expect(status == 200, f"read in {m}: {status} {body}")
            got = {r["Pk"]: r["Data"] for r in json.loads(body)["Records"]}
            expect(got == {r["pk"]: r["data"] for r in records}, f"{m} read {got}")
    log(f"a write in ams ({len(records)} records) is read on every machine of {', '.join(first)}")
    if shutil.which("redis-cli"):
        for region in first:
            m = fleet[region][1]
            out = sh("redis-cli", "-h", m.ip, "-p", "6379", "GET", "route:/svc7").stdout.strip()
            expect(json.loads(out) == records[7]["data"], f"redis-cli GET in {region}: {out!r}")
        log("redis-cli reads it in every region over IPv6")
    # Reads a machine does not serve itself go to the other machine of its region, never to
    # another region: reads in ams alone make ams machines answer peers, and iad's none.
    proxied = sum(metric(m, "firescroll_proxied_reads_total") - proxied_before[m.ns] for r in first for m in fleet[r])
    expect(proxied > 0, "reads for partitions a machine does not own were proxied inside its region")
    answered = {m.ns: metric(m, "firescroll_peer_requests_total") for r in first for m in fleet[r]}
    for m in fleet["ams"]:
        status, body = http("POST", m.url("/records/get"), {"Records": [{"pk": r["pk"], "sk": ""} for r in records]})
        expect(status == 200, f"read in {m}: {status} {body}")
    grew = {m.ns: metric(m, "firescroll_peer_requests_total") - answered[m.ns] for r in first for m in fleet[r]}
    others = [m for r in first if r != "ams" for m in fleet[r]]
    expect(all(grew[m.ns] == 0 for m in others), f"a read in ams reached another region: {grew}")
    expect(sum(grew[m.ns] for m in fleet["ams"]) > 0, f"ams machines answered each other: {grew}")
    log("reads are answered inside their region (peer requests: ams > 0, every other region 0)")

    # Snapshots of every partition (each ams machine snapshots what it serves).
    taken = []
    for m in fleet["ams"]:
        status, body = http("POST", m.url("/admin/snapshots"), timeout=60)
        expect(status == 200, f"snapshot on {m}: {status} {body}")
        taken += json.loads(body)["Snapshots"]
    expect(sorted(t["Partition"] for t in taken) == list(range(total)), f"snapshots of every partition: {taken}")
    log(f"{len(taken)} partition snapshots in S3 (Tigris stand-in)")

    # kill -9 of a machine: its region serves everything again.
    victim = fleet["iad"][1]
    processes[victim.ns].kill()
    for pid in sh("ip", "netns", "pids", victim.ns, check=False).stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    processes[victim.ns].wait()
    survivor = fleet["iad"][0]
    wait("iad serves every partition after kill -9 of a machine", lambda: serves_all("iad") and ready(survivor), 120, survivor)
    status, body = http("POST", survivor.url("/records/get"), {"Records": [{"pk": r["pk"], "sk": ""} for r in records]})
    expect(status == 200 and len(json.loads(body)["Records"]) == len(records), f"iad after the kill: {status} {body}")
    log(f"kill -9 of {victim}: {survivor} took its partitions and serves every read")

    # The log's head goes (retention): only the snapshots hold those entries now.
    delete_log_head(broker_port, taken)
    # A region added later starts from the snapshots, then follows the log.
    for m in fleet[later]:
        add_machine(m, everyone, services)
    for m in fleet[later]:
        wait(f"{m} ready", lambda m=m: up(m), 180, m)
    wait(f"{later} serves all {total} partitions", lambda: serves_all(later), 120)
    restored = [p for m in fleet[later] for p in partitions(m) if p.get("restored_from")]
    expect(len(restored) == total, f"every partition of {later} restored from a snapshot: {restored}")
    reference = {p["partition"]: (p["applied_offset"], p["digest"]) for m in fleet["ams"] for p in partitions(m)}
    def agrees():
        mine = {p["partition"]: (p["applied_offset"], p["digest"]) for m in fleet[later] for p in partitions(m)}
        return mine == reference
    wait(f"{later} holds what ams holds (equal digests at equal offsets)", agrees, 60)
    status, body = http("POST", fleet[later][0].url("/records/get"), {"Records": [{"pk": "route:/svc63", "sk": ""}]})
    expect(status == 200 and json.loads(body)["Records"][0]["Data"] == records[63]["data"], f"{later} read: {body}")
    log(f"region {later} added later: restored {total} partitions from S3, digests equal to ams")
    log("OK")


def delete_log_head(broker_port, taken):
    """DeleteRecords up to each snapshot's offset, through confluent-kafka's admin client."""
    script = """
import json, sys
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
parts = [TopicPartition("firescroll_default_mutations", t["Partition"], t["Offset"]) for t in json.loads(sys.argv[2])]
for tp, f in admin.delete_records(parts).items():
    f.result(30)
"""
    out = subprocess.run([sys.executable, "-c", script, f"[{HOST_IP}]:{broker_port}", json.dumps(taken)],
                         capture_output=True, text=True)
    expect(out.returncode == 0, f"DeleteRecords failed: {out.stderr}")


def main():
    if os.geteuid() != 0:
        raise SystemExit("fly-sim: needs root (it creates network namespaces)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run()
    except BaseException:
        if os.environ.get("FLY_SIM_HOLD"):  # debugging: look at the machines before cleanup
            log(f"holding for {os.environ['FLY_SIM_HOLD']} s; work in {work}")
            time.sleep(float(os.environ["FLY_SIM_HOLD"]))
        raise
    finally:
        cleanup()


if __name__ == "__main__":
    main()
