#!/usr/bin/env python3
"""Checks the Fly.io templates (.ci/run runs this; see fly/README.md).

1. fly/fly.toml and fly/redpanda/fly.toml validate against Fly's schema (SchemaStore's, copied
   to fly/fly.schema.json) with tomllib + jsonschema.
2. fly/fly.toml agrees with the node: `firescroll --print-config`, run with the template's [env]
   and the variables Fly sets on a machine (and nothing else), must listen, store and gossip where
   the template's services, checks, mount and metrics point.
3. fly/Dockerfile exposes those ports, and its `cargo build` command is run verbatim (with
   --build, from the repository root), so a broken build step fails here; the binary it builds
   links only libraries the runtime stage installs.

    scripts/check-fly.py --bin PATH/TO/firescroll [--schema PATH] [--build]
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parent.parent
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def validate(schema, path):
    with open(path, "rb") as f:
        config = tomllib.load(f)
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(config), key=str):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"{path.relative_to(ROOT)}: {where}: {error.message}")
    return config


def fly_machine_env(config):
    """The variables Fly sets on a machine of this app, plus the template's [env]."""
    env = {k: str(v) for k, v in config.get("env", {}).items()}
    env.update(
        {
            "FLY_APP_NAME": config["app"],
            "FLY_REGION": config["primary_region"],
            "FLY_MACHINE_ID": "148ed193b95089",
            "FLY_PRIVATE_IP": "fdaa:0:1:a7b:145:9c2e:8b4f:2",
            "FLY_PROCESS_GROUP": "app",
            # A secret in a real deployment (fly/deploy.sh sets it); gossip needs the Kafka log.
            "KAFKA_SEEDS": "broker.internal:9092",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
    )
    return env


def check_agreement(config, node, dockerfile):
    api, internal, resp = node["api_port"], node["internal_port"], node["resp_port"]
    gossip = node["gossip_port"]
    http = config.get("http_service", {})
    check(http.get("internal_port") == api, f"http_service.internal_port {http.get('internal_port')} is not the node's API_PORT {api}")
    check(http.get("auto_stop_machines") == "off", "http_service.auto_stop_machines must be \"off\": a stopped node falls behind the log")
    paths = [c.get("path") for c in http.get("checks", [])]
    check("/ready" in paths, f"http_service.checks must GET /ready (has {paths})")
    services = config.get("services", [])
    services = services if isinstance(services, list) else [services]
    redis = [s for s in services if s.get("internal_port") == resp]
    check(len(redis) == 1, f"one [[services]] must serve the node's RESP_PORT {resp}")
    for s in redis:
        check(s.get("protocol") == "tcp", "the Redis service is tcp")
        check(bool(s.get("tcp_checks")), "the Redis service needs a tcp_checks entry")
        check(s.get("auto_stop_machines") == "off", "the Redis service must not auto-stop machines")
    metrics = config.get("metrics", {})
    check(metrics.get("port") == internal, f"metrics.port {metrics.get('port')} is not the node's INTERNAL_PORT {internal}")
    check(metrics.get("path") == "/metrics", "metrics.path must be /metrics")
    mounts = config.get("mounts", [])
    mounts = mounts if isinstance(mounts, list) else [mounts]
    check(len(mounts) == 1, "one [[mounts]] volume per machine")
    db_path = Path(node["db_path"])
    for m in mounts:
        dest = Path(m["destination"])
        check(db_path == dest or dest in db_path.parents, f"DB_PATH {db_path} is not on the volume mounted at {dest}")
    check(node["listen_addr"] == "::", f"the node must listen on :: on Fly (6PN is IPv6), not {node['listen_addr']}")
    check(node["log"] == "kafka", "with KAFKA_SEEDS the node must use the Kafka log")
    check(node["region"] == config["primary_region"], "REGION must come from FLY_REGION")
    check(node["instance_id"] == "148ed193b95089", "INSTANCE_ID must come from FLY_MACHINE_ID")
    check(node["advertise_host"] == "fdaa:0:1:a7b:145:9c2e:8b4f:2", "ADVERTISE_ADDR must come from FLY_PRIVATE_IP")
    want_seed = f"{config['primary_region']}.{config['app']}.internal:{gossip}"
    check(node["gossip_peers"] == [want_seed], f"GOSSIP_PEERS must be {want_seed}, not {node['gossip_peers']}")
    check(config.get("kill_signal") == "SIGTERM", "kill_signal must be SIGTERM (the node leaves cleanly on it)")
    env = config.get("env", {})
    drain_s = int(env.get("SHUTDOWN_SLEEP_SEC", "0")) + int(env.get("SHUTDOWN_TIMEOUT_MS", "10000")) / 1000
    check(config.get("kill_timeout", 5) > drain_s, f"kill_timeout must exceed SHUTDOWN_SLEEP_SEC + SHUTDOWN_TIMEOUT_MS ({drain_s} s)")
    check(config.get("deploy", {}).get("strategy") == "rolling", "deploy.strategy must be rolling (volumes pin machines)")
    exposed = set(re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.M)[0].split()) if "EXPOSE" in dockerfile else set()
    for port in [f"{api}", f"{internal}", f"{resp}", f"{gossip}/udp"]:
        check(port in exposed, f"fly/Dockerfile must EXPOSE {port} (exposes {sorted(exposed)})")
    build = config.get("build", {}).get("dockerfile")
    check(build is not None and (ROOT / "fly" / build).exists(), f"[build] dockerfile {build!r} is not next to fly.toml")


def dockerfile_build_command(dockerfile):
    """The `cargo build ...` of the Dockerfile's RUN line (continuations joined)."""
    text = dockerfile.replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("RUN ") and "cargo build" in line:
            command = line[line.index("cargo build"):]
            return shlex.split(command.split("&&")[0])
    raise SystemExit("fly/Dockerfile has no RUN ... cargo build line")


def check_linked_libraries(binary, dockerfile):
    packages = set(re.findall(r"install -y --no-install-recommends ([^\\\n]+)", dockerfile)[0].split())
    provided = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "libpthread.so.0", "libdl.so.2", "librt.so.1"}
    by_package = {"libssl3": {"libssl.so.3", "libcrypto.so.3"}, "zlib1g": {"libz.so.1"}}
    for package in packages:
        provided |= by_package.get(package, set())
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\).*\[(.+)\]", out))
    missing = needed - provided
    check(not missing, f"the binary links {sorted(missing)}, which fly/Dockerfile's runtime stage does not install")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="a firescroll binary (for --print-config)")
    # SchemaStore's schema for fly.toml, copied into the repository so CI needs no network.
    parser.add_argument("--schema", default=str(ROOT / "fly/fly.schema.json"))
    parser.add_argument("--build", action="store_true", help="also run the Dockerfile's cargo build")
    args = parser.parse_args()
    schema_path = Path(args.schema)
    schema = json.loads(schema_path.read_text())
    config = validate(schema, ROOT / "fly/fly.toml")
    validate(schema, ROOT / "fly/redpanda/fly.toml")
    printed = subprocess.run(
        [args.bin, "--print-config"], env=fly_machine_env(config), capture_output=True, text=True
    )
    if printed.returncode != 0:
        raise SystemExit(f"firescroll --print-config with fly.toml's [env] failed: {printed.stderr}")
    node = json.loads(printed.stdout)
    dockerfile = (ROOT / "fly/Dockerfile").read_text()
    check_agreement(config, node, dockerfile)
    if args.build:
        command = dockerfile_build_command(dockerfile)
        print("fly/Dockerfile's build:", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        check_linked_libraries(target / "release" / "firescroll", dockerfile)
    subprocess.run(["sh", "-n", str(ROOT / "fly/entrypoint.sh")], check=True)
    if problems:
        print("Fly templates: FAILED", file=sys.stderr)
        for p in problems:
            print("  -", p, file=sys.stderr)
        sys.exit(1)
    print(f"Fly templates: OK (schema {schema_path.name}; node settings agree)")


if __name__ == "__main__":
    main()
