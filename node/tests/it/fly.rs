//! The Fly.io templates and deploy script (fly/): the templates validate against Fly's schema
//! and agree with what this node runs with on a Fly machine (scripts/check-fly.py), and
//! `fly/deploy.sh --dry-run` prints every command for every region and runs none.

use crate::common::BIN;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_fly_templates_validate_and_agree_with_the_node() {
    let out = Command::new("python3")
        .arg(repo().join("scripts/check-fly.py"))
        .args(["--bin", BIN])
        .output()
        .expect("python3 runs scripts/check-fly.py (scripts/test.sh installs jsonschema)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deploy_dry_run_prints_every_fly_command_and_runs_none() {
    // A `fly` on PATH that records being run: a dry run must never call it.
    let bin = tempfile::tempdir().unwrap();
    let called = bin.path().join("called");
    let fly = bin.path().join("fly");
    std::fs::write(
        &fly,
        format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", called.display()),
    )
    .unwrap();
    let mut mode = std::fs::metadata(&fly).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&fly, mode).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new(repo().join("fly/deploy.sh"))
        .args([
            "--app",
            "edge-cfg",
            "--regions",
            "ams,iad,sin",
            "--count",
            "2",
        ])
        .args(["--tigris", "--dry-run"])
        .env("PATH", path)
        .env("KAFKA_SEEDS", "seed.example:9092")
        .env("KAFKA_PASS", "hunter2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !called.exists(),
        "a dry run ran fly: {}",
        std::fs::read_to_string(&called).unwrap()
    );
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("+ fly "))
        .collect();
    assert_eq!(commands[0], "apps create edge-cfg", "{stdout}");
    assert!(
        commands[1]
            .starts_with("secrets set --app edge-cfg --stage KAFKA_SEEDS=*** KAFKA_PASS=***"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "a secret leaked: {stdout}");
    assert!(commands.contains(&"storage create --app edge-cfg --name edge-cfg-snapshots --yes"));
    for region in ["ams", "iad", "sin"] {
        let volumes = commands
            .iter()
            .filter(|c| {
                **c == format!(
                    "volumes create firescroll_data --app edge-cfg --region {region} --size 10 --yes"
                )
            })
            .count();
        assert_eq!(volumes, 2, "one volume per machine in {region}: {stdout}");
        assert!(
            commands.contains(
                &format!("scale count 2 --region {region} --app edge-cfg --yes").as_str()
            ),
            "{stdout}"
        );
    }
    assert!(
        commands.contains(
            &"deploy . --config fly/fly.edge-cfg.toml --dockerfile fly/Dockerfile --app edge-cfg --strategy rolling --yes"
        ),
        "{stdout}"
    );
    assert!(
        !repo().join("fly/fly.edge-cfg.toml").exists(),
        "a dry run writes nothing"
    );
    // Bad arguments are refused with what to fix.
    let refused = Command::new(repo().join("fly/deploy.sh"))
        .args(["--regions", "ams"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--app NAME is required"));
}

/// Eight nodes, a broker and an S3 server at once: scripts/test.sh runs it on its own after the
/// rest of the suite (`--ignored`), so the other tests' load does not starve it.
#[test]
#[ignore = "run alone by scripts/test.sh after the suite"]
fn a_many_region_fly_deployment_simulated_in_network_namespaces() {
    // Root is needed for network namespaces (CI runs as root); the script removes all it made.
    let out = Command::new(repo().join("scripts/fly-sim.sh"))
        .env("FIRESCROLL_BIN", BIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("fly-sim: OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "configured from FLY_* alone",
        "one ring per region",
        "is read on every machine",
        "answered inside their region",
        "took its partitions",
        "restored 16 partitions from S3",
    ] {
        assert!(stdout.contains(step), "missing step {step:?}:\n{stdout}");
    }
}
