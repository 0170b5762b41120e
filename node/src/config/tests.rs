use super::resolve::split_advertise;
use super::*;

fn settings(args: &[&str]) -> Settings {
    Settings::try_parse_from(std::iter::once("firescroll").chain(args.iter().copied())).unwrap()
}

#[test]
fn defaults_are_a_dev_node() {
    let c = Config::resolve(Settings::default()).unwrap();
    assert_eq!(c.db_path, PathBuf::from("./data"));
    assert_eq!((c.api_port, c.internal_port, c.partitions), (8190, 8191, 4));
    assert_eq!(c.resp_port, 6379);
    assert!(
        c.listen_addr.is_loopback(),
        "an open dev node is reachable from this machine only"
    );
    assert!(c.kafka.is_none());
}

#[test]
fn flags_beat_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fs.toml");
    std::fs::write(
        &file,
        "api_port = 9000\npartitions = 8\nlog_format = \"json\"\n",
    )
    .unwrap();
    let c = Config::resolve(settings(&[
        "--config",
        file.to_str().unwrap(),
        "--api-port",
        "9100",
    ]))
    .unwrap();
    assert_eq!(c.api_port, 9100);
    assert_eq!(c.partitions, 8);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.internal_port, 8191);
}

#[test]
fn bad_settings_name_the_setting() {
    let err = |s: Settings| Config::resolve(s).unwrap_err().to_string();
    assert!(err(settings(&["--partitions", "0"])).starts_with("PARTITIONS"));
    assert!(err(settings(&["--api-port", "1", "--internal-port", "1"])).contains("API_PORT"));
    assert!(err(settings(&["--log-level", "loud"])).starts_with("LOG_LEVEL"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fs.toml");
    std::fs::write(&file, "api_prot = 1\n").unwrap();
    let e = Config::resolve(settings(&["--config", file.to_str().unwrap()])).unwrap_err();
    assert!(
        format!("{e:#}").contains("unknown field `api_prot`"),
        "{e:#}"
    );
    assert!(Settings::try_parse_from(["firescroll", "--api-port", "http"]).is_err());
    let kafka = |extra: &[&str]| {
        let mut args = vec!["--kafka-seeds", "127.0.0.1:9092"];
        args.extend_from_slice(extra);
        err(settings(&args))
    };
    assert!(kafka(&["--namespace", "a_b"]).starts_with("NAMESPACE"));
    assert!(kafka(&["--kafka-user", "u"]).contains("KAFKA_USER and KAFKA_PASS"));
    assert!(kafka(&["--kafka-sasl-mechanism", "PLAIN"]).starts_with("KAFKA_SASL_MECHANISM"));
    assert!(kafka(&["--kafka-compression", "brotli"]).starts_with("KAFKA_COMPRESSION"));
    // Set but empty, as a template whose variable was unset leaves it: not a broker, nor the
    // embedded log.
    for empty in ["", " ", ",,"] {
        assert!(
            err(settings(&["--kafka-seeds", empty]))
                .starts_with("KAFKA_SEEDS is set but names no broker"),
            "{empty:?}"
        );
    }
}

#[test]
fn kafka_settings_follow_firescroll_names() {
    let c = Config::resolve(settings(&[
        "--kafka-seeds",
        "b:9092",
        "--namespace",
        "prod",
        "--region",
        "iad",
        "--replica-group",
        "rg2",
        "--instance-id",
        "n1",
        "--kafka-session-ms",
        "6000",
        "--kafka-user",
        "u",
        "--kafka-pass",
        "p",
        "--kafka-tls",
        "1",
    ]))
    .unwrap();
    let k = c.kafka.unwrap();
    assert_eq!(k.group_id(), "firescroll_prod_iad_rg2");
    assert_eq!(k.instance_id, "n1");
    assert_eq!(k.heartbeat_interval, Duration::from_millis(2000));
    assert_eq!(k.base_config().get("security.protocol"), Some("sasl_ssl"));
}

#[test]
fn gossip_is_on_with_an_advertise_address_and_needs_kafka() {
    let c = Config::resolve(settings(&["--kafka-seeds", "b:9092"])).unwrap();
    assert!(
        c.cluster.is_none(),
        "no ADVERTISE_ADDR/GOSSIP_PEERS: gossip off"
    );
    let c = Config::resolve(settings(&[
        "--kafka-seeds",
        "b:9092",
        "--advertise-addr",
        "fdaa::3",
        "--gossip-peers",
        "iad.app.internal:8192, 10.0.0.2:8192",
        "--read-tokens",
        "r1",
        "--write-tokens",
        "w1",
    ]))
    .unwrap();
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.advertise_host, "fdaa::3");
    assert_eq!(cluster.gossip_port, 8192);
    assert_eq!(cluster.peers, ["iad.app.internal:8192", "10.0.0.2:8192"]);
    assert_eq!(cluster.broadcast_interval, Duration::from_millis(1000));
    assert_eq!(
        cluster.token.as_deref(),
        Some("r1"),
        "the least powerful token"
    );

    let error = |args: &[&str]| Config::resolve(settings(args)).unwrap_err().to_string();
    assert!(error(&["--advertise-addr", "10.0.0.1"]).contains("need KAFKA_SEEDS"));
    assert!(
        error(&["--kafka-seeds", "b:9092", "--gossip-peers", "x:1"])
            .contains("ADVERTISE_ADDR is not")
    );
    assert!(
        error(&[
            "--kafka-seeds",
            "b:9092",
            "--advertise-addr",
            "h",
            "--gossip-peers",
            "x"
        ])
        .contains("is not host:port")
    );
    assert!(
        error(&["--kafka-seeds", "b:9092", "--advertise-addr", "h:9999"])
            .contains("is not API_PORT")
    );
    // Gossip keys: unsigned without them; a key too short to protect anything is refused.
    assert!(!cluster.auth.is_keyed());
    let gossip = ["--kafka-seeds", "b:9092", "--advertise-addr", "h"];
    let keyed = Config::resolve(settings(
        &[&gossip[..], &["--gossip-keys", "0123456789abcdef0123,none"]].concat(),
    ))
    .unwrap();
    let auth = keyed.cluster.unwrap().auth;
    assert!(auth.is_keyed() && auth.accepts_unsigned());
    let short = error(&[&gossip[..], &["--gossip-keys", "secret"]].concat());
    assert!(short.starts_with("GOSSIP_KEYS"), "{short}");
    // With TLS on the API port, peers ask each other over HTTPS: whom to trust must be said.
    let tls = ["--tls-cert-path", "c.pem", "--tls-key-path", "k.pem"];
    let both = error(&[&gossip[..], &tls[..]].concat());
    assert!(both.starts_with("PEER_TLS_CA_PATH"), "{both}");
    let peers = Config::resolve(settings(
        &[&gossip[..], &tls[..], &["--peer-tls-ca-path", "ca.pem"]].concat(),
    ))
    .unwrap();
    let peer_tls = peers.cluster.unwrap().tls.unwrap();
    assert_eq!(peer_tls.ca_path, std::path::Path::new("ca.pem"));
    assert_eq!(peer_tls.name, None);
}

#[test]
fn plugin_limits_are_settings() {
    let c = Config::resolve(settings(&[
        "--plugin-fuel",
        "1000",
        "--plugin-memory-bytes",
        "131072",
        "--plugin-max-bytes",
        "2048",
        "--max-value-bytes",
        "4096",
    ]))
    .unwrap();
    let limits = &c.plugin_limits;
    assert_eq!(
        (limits.fuel, limits.memory_bytes, limits.max_module_bytes),
        (1000, 131072, 2048)
    );
    assert_eq!(
        limits.max_output_bytes, 4096,
        "a transform's output is a value"
    );
    let error = Config::resolve(settings(&["--plugin-fuel", "0"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("PLUGIN_FUEL"), "{error}");
}

#[test]
fn advertise_addresses_in_every_form() {
    let split = |v: &str| split_advertise(v).unwrap();
    assert_eq!(split("node1"), ("node1".into(), None));
    assert_eq!(split("node1:8190"), ("node1".into(), Some(8190)));
    assert_eq!(split("10.1.2.3"), ("10.1.2.3".into(), None));
    assert_eq!(split("10.1.2.3:8190"), ("10.1.2.3".into(), Some(8190)));
    assert_eq!(split("fdaa:0:1::3"), ("fdaa:0:1::3".into(), None));
    assert_eq!(split("[fdaa::3]:8190"), ("fdaa::3".into(), Some(8190)));
    assert!(split_advertise("").is_err());
    assert!(split_advertise("host:http").is_err());
}

fn fly_machine() -> fly::FlyEnv {
    let vars = [
        ("FLY_APP_NAME", "edge-config"),
        ("FLY_REGION", "ams"),
        ("FLY_MACHINE_ID", "3d8d9d4ae71089"),
        ("FLY_PRIVATE_IP", "fdaa:0:1:a7b:145:9c2e:8b4f:2"),
        ("FLY_PROCESS_GROUP", "app"),
    ];
    fly::FlyEnv::read(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
}

#[test]
fn on_fly_a_kafka_node_configures_itself_from_the_machine() {
    let c = Config::resolve_with_fly(
        settings(&["--kafka-seeds", "broker.internal:9092"]),
        Some(fly_machine()),
    )
    .unwrap();
    assert_eq!(c.listen_addr, "::".parse::<IpAddr>().unwrap());
    let kafka = c.kafka.as_ref().unwrap();
    assert_eq!(kafka.region, "ams");
    assert_eq!(kafka.instance_id, "3d8d9d4ae71089");
    assert_eq!(kafka.replica_group, "app");
    let cluster = c.cluster.as_ref().unwrap();
    assert_eq!(cluster.advertise_host, "fdaa:0:1:a7b:145:9c2e:8b4f:2");
    assert_eq!(cluster.peers, ["ams.edge-config.internal:8192"]);
    assert_eq!(cluster.bind.to_string(), "[::]:8192");
    assert_eq!(c.node_name, "3d8d9d4ae71089");
    let derived: Vec<&str> = c.from_fly.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        derived,
        [
            "LISTEN_ADDR",
            "REGION",
            "INSTANCE_ID",
            "REPLICA_GROUP",
            "ADVERTISE_ADDR",
            "GOSSIP_PEERS"
        ]
    );
}

#[test]
fn on_fly_explicit_settings_win_and_the_embedded_log_stays_alone() {
    let c = Config::resolve_with_fly(
        settings(&[
            "--kafka-seeds",
            "b:9092",
            "--region",
            "eu",
            "--gossip-port",
            "9000",
            "--listen-addr",
            "0.0.0.0",
        ]),
        Some(fly_machine()),
    )
    .unwrap();
    assert_eq!(c.kafka.as_ref().unwrap().region, "eu");
    assert_eq!(c.listen_addr, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(
        c.cluster.as_ref().unwrap().peers,
        ["eu.edge-config.internal:9000"]
    );
    let alone = Config::resolve_with_fly(Settings::default(), Some(fly_machine())).unwrap();
    assert!(alone.cluster.is_none() && alone.kafka.is_none());
    assert_eq!(alone.listen_addr, "::".parse::<IpAddr>().unwrap());
    let off_fly = Config::resolve_with_fly(Settings::default(), None).unwrap();
    assert!(off_fly.from_fly.is_empty());
    assert!(fly::FlyEnv::read(|_| None).is_none());
}

#[test]
fn reject_entries_at_takes_log_positions() {
    let config = Config::resolve(settings(&["--reject-entries-at", "2:1050, 0:7"])).unwrap();
    let positions: Vec<(u32, u64)> = config
        .reject_entries_at
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    assert_eq!(positions, [(0, 7), (2, 1050)]);
    assert_eq!(
        config.summary()["reject_entries_at"],
        serde_json::json!(["0:7", "2:1050"])
    );
    for bad in ["1050", "2:x", "p1:3", "2:1050:3"] {
        let error = Config::resolve(settings(&["--reject-entries-at", bad]))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("REJECT_ENTRIES_AT") && error.contains("partition:offset"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn the_entry_write_version_waits_for_the_fleet_on_kafka() {
    let version =
        |args: &[&str]| Config::resolve(settings(args)).map(|c| c.service.entry_write_version);
    // One node reads the embedded log: it writes the newest format at once.
    assert_eq!(version(&[]).unwrap(), crate::model::ENTRY_VERSION);
    // On Kafka, older releases may read the log: v1 until raised.
    assert_eq!(version(&["--kafka-seeds", "b:9092"]).unwrap(), 1);
    for raised in 2..=crate::model::ENTRY_VERSION {
        let raised = raised.to_string();
        let args = ["--kafka-seeds", "b:9092", "--entry-write-version", &raised];
        assert_eq!(version(&args).unwrap().to_string(), raised);
    }
    for bad in [
        "0".to_owned(),
        (crate::model::ENTRY_VERSION + 1).to_string(),
    ] {
        let e = version(&["--entry-write-version", &bad])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ENTRY_WRITE_VERSION"), "{e}");
    }
}
