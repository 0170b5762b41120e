//! TLS on the HTTP API and the Redis port (TLS_CERT_PATH, TLS_KEY_PATH, TLS_CLIENT_CA_PATH), with
//! the clients users have: curl (HTTPS, HTTP/2 by ALPN, client certificates), redis-cli, redis-py
//! and ioredis over TLS, against certificates an operator's CA signed (made here with rcgen). A
//! rotated certificate is served without a restart, a broken rotation keeps the last good one,
//! a client that forgot TLS is told so in its protocol, and a bad setting stops the node saying
//! which.

use crate::common;

use common::Node;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A certificate authority whose certificate is a PEM file in the test's folder.
pub(crate) struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: PathBuf,
}

impl Ca {
    pub(crate) fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("FireScroll test {name}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca { params, key, pem }
    }

    /// A certificate this CA signs and its key, as PEM: for the node (`localhost`, 127.0.0.1)
    /// or for a client.
    pub(crate) fn sign(&self, client: bool) -> (String, String) {
        self.sign_until(client, None)
    }

    /// A node's certificate (`localhost`, 127.0.0.1) that is good for client authentication
    /// too: what a node presents to its peers when they ask clients for certificates.
    pub(crate) fn sign_node_and_client(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// [`Ca::sign`], valid until midnight (UTC) of `(year, month, day)` when given (rcgen's
    /// default otherwise: the year 4096).
    pub(crate) fn sign_until(
        &self,
        client: bool,
        until: Option<(i32, u8, u8)>,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = if client {
            Vec::new()
        } else {
            vec!["localhost".into(), "127.0.0.1".into()]
        };
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if let Some((year, month, day)) = until {
            params.not_after = rcgen::date_time_ymd(year, month, day);
        }
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn path(&self) -> &str {
        self.pem.to_str().unwrap()
    }
}

/// Writes a certificate and key where the node reads them, each replaced in one step (written
/// aside, then renamed), as cert-manager and careful scripts do.
pub(crate) fn install(dir: &Path, (cert, key): &(String, String)) -> (String, String) {
    let (cert_path, key_path) = (dir.join("node.pem"), dir.join("node.key"));
    for (path, text) in [(&key_path, key), (&cert_path, cert)] {
        let aside = path.with_extension("new");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, path).unwrap();
    }
    (
        cert_path.to_str().unwrap().to_string(),
        key_path.to_str().unwrap().to_string(),
    )
}

/// Writes a client's certificate and key to files curl and redis-cli take.
fn client_files(dir: &Path, name: &str, (cert, key): &(String, String)) -> (String, String) {
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (
        cert_path.to_str().unwrap().to_string(),
        key_path.to_str().unwrap().to_string(),
    )
}

fn tls_node(cert: &str, key: &str, more: &[(&str, &str)]) -> Node {
    let mut env = vec![("TLS_CERT_PATH", cert), ("TLS_KEY_PATH", key)];
    env.extend_from_slice(more);
    Node::start_with(&env)
}

/// curl with `args`: whether it succeeded, and what it printed (stdout, then stderr).
pub(crate) fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (apt-get install curl; scripts/test.sh does)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// redis-cli over TLS trusting `ca` (and presenting `client` when given): its output.
fn redis_cli_tls(node: &Node, ca: &Ca, client: Option<&(String, String)>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-p", &node.resp.to_string(), "--tls", "--cacert", ca.path()]);
    if let Some((cert, key)) = client {
        cmd.args(["--cert", cert, "--key", key]);
    }
    let out = cmd
        .args(args)
        .output()
        .expect("redis-cli runs (apt-get install redis-tools; scripts/test.sh does)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

/// Whether an HTTPS client trusting only `ca` reaches the node's API port.
fn trusted_by(node: &Node, ca: &Ca) -> bool {
    let (ok, out) = curl(&[
        "--cacert",
        ca.path(),
        &format!("https://localhost:{}/up", node.api),
    ]);
    ok && out.trim() == "ok"
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A counter's value from the node's /metrics, 0 when it has no sample yet.
fn metric(node: &Node, series: &str) -> f64 {
    node.metric(series)
}

#[test]
fn https_and_redis_over_tls_with_the_clients_users_have() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = install(dir.path(), &ca.sign(false));
    let node = tls_node(&cert, &key, &[]);
    let api = format!("https://localhost:{}", node.api);

    // HTTPS: a write over HTTP/1.1, a read over HTTP/2 (offered by ALPN, as browsers and curl
    // pick it).
    let (ok, out) = curl(&[
        "--cacert",
        ca.path(),
        "--http1.1",
        "-w",
        "\n%{http_version}",
        "-d",
        r#"{"Records":[{"Pk":"cfg","Sk":"tls","Data":{"on":true}}],"wait":true}"#,
        &format!("{api}/records/put"),
    ]);
    assert!(
        ok && out.contains("applied") && out.ends_with("\n1.1"),
        "{out}"
    );
    let (ok, out) = curl(&[
        "--cacert",
        ca.path(),
        "--http2",
        "-w",
        "\n%{http_version}",
        "-d",
        r#"{"Records":[{"Pk":"cfg","Sk":"tls"}]}"#,
        &format!("{api}/records/get"),
    ]);
    assert!(
        ok && out.contains(r#""Data":{"on":true}"#) && out.ends_with("\n2"),
        "{out}"
    );
    // A client that does not trust the CA is refused by its own check (curl: exit 60).
    let (ok, out) = curl(&[&format!("{api}/up")]);
    assert!(!ok && out.contains("certificate"), "{out}");
    // Plain HTTP to the HTTPS port: told what to do, in the API's error shape.
    let (_, out) = curl(&[
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:{}/records/get", node.api),
        "-d",
        "{}",
    ]);
    assert!(
        out.contains("plain_http_to_https_port")
            && out.contains("https://")
            && out.ends_with("\n400"),
        "{out}"
    );

    // redis-cli over TLS; without TLS it reads why it cannot talk to this port.
    assert_eq!(
        redis_cli_tls(&node, &ca, None, &["SET", "greeting", "hello"]),
        "OK"
    );
    assert_eq!(
        redis_cli_tls(&node, &ca, None, &["GET", "greeting"]),
        "hello"
    );
    let out = Command::new("redis-cli")
        .args(["-p", &node.resp.to_string(), "GET", "greeting"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("this port speaks TLS") && text.contains("--tls"),
        "{text}"
    );

    // redis-py: a pipeline whose commands and replies each outgrow the socket buffers (replies
    // held while commands are still being read, over TLS), a transaction, pub/sub pushes
    // between commands (a keyspace notification), and RESP3.
    let script = format!(
        r#"
import redis
kw = dict(port={port}, ssl=True, ssl_ca_certs={ca:?})
r = redis.Redis(**kw)
p = r.pipeline(transaction=False)
for i in range(20000):
    p.echo(b"x" * 1024)
out = p.execute()
assert len(out) == 20000 and all(o == b"x" * 1024 for o in out)
p = r.pipeline()
for i in range(50):
    p.hset("tls:h", f"f{{i}}", i)
assert p.execute() == [1] * 50
assert r.hlen("tls:h") == 50
r.config_set("notify-keyspace-events", "KA")
sub = redis.Redis(**kw).pubsub()
sub.subscribe("__keyspace@0__:tls:note")
assert sub.get_message(timeout=5)["type"] == "subscribe"
r.set("tls:note", "x")
m = sub.get_message(timeout=5)
assert m and m["data"] == b"set", m
r3 = redis.Redis(protocol=3, decode_responses=True, **kw)
assert r3.get("greeting") == "hello"

# A client that reads its replies slowly (the node's socket stays full) gets every byte, in
# order.
import socket, ssl, time
ctx = ssl.create_default_context(cafile={ca:?})
raw = ctx.wrap_socket(socket.create_connection(("localhost", {port})), server_hostname="localhost")
value = b"y" * 4096
command = b"*2\r\n$4\r\nECHO\r\n$4096\r\n" + value + b"\r\n"
raw.sendall(command * 3000)
expected = (b"$4096\r\n" + value + b"\r\n") * 3000
got = bytearray()
raw.settimeout(20)
while len(got) < len(expected):
    chunk = raw.recv(65536)
    assert chunk, "connection closed"
    got += chunk
    time.sleep(0.002)
assert bytes(got) == expected
print("ok")
"#,
        port = node.resp,
        ca = ca.path(),
    );
    common::assert_script_ok(
        Command::new("python3").args(["-c", &script]),
        "redis-py (pip install redis; scripts/test.sh does)",
    );

    // ioredis with `tls: {{ ca }}`, as its README shows.
    let clients = std::env::var("NODE_CLIENTS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/firescroll/node-clients",
            std::env::var("HOME").unwrap()
        )
    });
    let script = format!(
        r#"
const Redis = require("ioredis");
const fs = require("fs");
const r = new Redis({{ port: {port}, host: "localhost", tls: {{ ca: fs.readFileSync({ca:?}) }} }});
(async () => {{
  await r.set("from:ioredis", "yes");
  const v = await r.get("from:ioredis");
  const all = await r.mget("greeting", "from:ioredis");
  if (v !== "yes" || all[0] !== "hello") throw new Error(`got ${{v}} ${{all}}`);
  r.disconnect();
  console.log("ok");
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"#,
        port = node.resp,
        ca = ca.path(),
    );
    common::assert_script_ok(
        Command::new("node")
            .args(["-e", &script])
            .env("NODE_PATH", format!("{clients}/node_modules")),
        &format!("ioredis (npm install ioredis@5 in {clients}; scripts/test.sh does)"),
    );

    // The internal port stays plaintext (peers, metrics), and counted the clients that forgot
    // TLS.
    assert!(
        metric(
            &node,
            r#"firescroll_tls_handshake_failures_total{port="http",reason="plaintext"}"#
        ) >= 1.0
    );
    assert!(
        metric(
            &node,
            r#"firescroll_tls_handshake_failures_total{port="redis",reason="plaintext"}"#
        ) >= 1.0
    );
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old-ca"), Ca::new(dir.path(), "new-ca"));
    let (cert, key) = install(dir.path(), &old_ca.sign_until(false, Some((2030, 1, 2))));
    let mut node = tls_node(&cert, &key, &[]);
    assert!(trusted_by(&node, &old_ca) && !trusted_by(&node, &new_ca));
    // When the served certificate expires, for alerts: 2030-01-02T00:00:00Z.
    let expiry = "firescroll_tls_certificate_expiry_timestamp_seconds";
    assert_eq!(metric(&node, expiry), 1_893_542_400.0);

    // A rotation caught half-way (the certificate file cut short): logged, counted, and the
    // last good certificate still served.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    wait_for(
        "the failed reload to be logged",
        Duration::from_secs(30),
        || node.log().contains("TLS files changed but do not load"),
    );
    assert!(
        metric(&node, r#"firescroll_tls_reloads_total{result="failed"}"#) >= 1.0,
        "counted"
    );
    assert!(
        trusted_by(&node, &old_ca),
        "still serving the last good certificate"
    );
    assert_eq!(
        redis_cli_tls(&node, &old_ca, None, &["PING"]),
        "PONG",
        "Redis too"
    );

    // The new pair, from another CA: new connections get it, on both ports, without a restart.
    install(dir.path(), &new_ca.sign_until(false, Some((2031, 6, 1))));
    wait_for("the new certificate", Duration::from_secs(30), || {
        trusted_by(&node, &new_ca)
    });
    assert!(!trusted_by(&node, &old_ca));
    assert_eq!(redis_cli_tls(&node, &new_ca, None, &["PING"]), "PONG");
    assert!(metric(&node, r#"firescroll_tls_reloads_total{result="ok"}"#) >= 1.0);
    // The new certificate's expiry: 2031-06-01T00:00:00Z.
    assert_eq!(metric(&node, expiry), 1_938_038_400.0);

    // SIGHUP reads the files at once, changed or not.
    node.signal("HUP");
    wait_for(
        "the reload SIGHUP asked for",
        Duration::from_secs(10),
        || {
            node.log()
                .lines()
                .any(|l| l.contains("TLS certificate reloaded") && l.contains("SIGHUP"))
        },
    );
    assert!(trusted_by(&node, &new_ca), "still up after SIGHUP");
    assert!(node.terminate().success());
}

#[test]
fn an_expired_certificate_is_said_loudly_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = install(dir.path(), &ca.sign_until(false, Some((2020, 1, 1))));
    let node = tls_node(&cert, &key, &[]);
    assert!(node.log().contains("has EXPIRED"), "{}", node.log());
    assert_eq!(
        metric(&node, "firescroll_tls_certificate_expiry_timestamp_seconds"),
        1_577_836_800.0
    );
    // Clients refuse it, as they should.
    assert!(!trusted_by(&node, &ca));
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new(dir.path(), "server-ca");
    let clients_ca = Ca::new(dir.path(), "clients-ca");
    let rogue_ca = Ca::new(dir.path(), "rogue-ca");
    let (cert, key) = install(dir.path(), &server_ca.sign(false));
    let node = tls_node(&cert, &key, &[("TLS_CLIENT_CA_PATH", clients_ca.path())]);
    let app = client_files(dir.path(), "app", &clients_ca.sign(true));
    let rogue = client_files(dir.path(), "rogue", &rogue_ca.sign(true));
    let up = format!("https://localhost:{}/up", node.api);

    let (ok, out) = curl(&[
        "--cacert",
        server_ca.path(),
        "--cert",
        &app.0,
        "--key",
        &app.1,
        &up,
    ]);
    assert!(ok && out.trim() == "ok", "{out}");
    let (ok, out) = curl(&["--cacert", server_ca.path(), &up]);
    assert!(!ok, "no client certificate: {out}");
    let (ok, out) = curl(&[
        "--cacert",
        server_ca.path(),
        "--cert",
        &rogue.0,
        "--key",
        &rogue.1,
        &up,
    ]);
    assert!(!ok, "a certificate another CA signed: {out}");

    assert_eq!(
        redis_cli_tls(&node, &server_ca, Some(&app), &["PING"]),
        "PONG"
    );
    assert_ne!(redis_cli_tls(&node, &server_ca, None, &["PING"]), "PONG");
    assert_ne!(
        redis_cli_tls(&node, &server_ca, Some(&rogue), &["PING"]),
        "PONG"
    );
    assert!(
        metric(
            &node,
            r#"firescroll_tls_handshake_failures_total{port="redis",reason="handshake"}"#
        ) >= 2.0
    );
    // Why, for the operator: the handshake's own reason.
    assert!(
        node.log().contains("peer sent no certificates"),
        "{}",
        node.log()
    );
}

#[test]
fn tls_settings_that_cannot_work_stop_the_node_saying_which() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = install(dir.path(), &ca.sign(false));
    let other_key = client_files(dir.path(), "other", &ca.sign(false)).1;
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (env, expect) in [
        (
            vec![("TLS_CERT_PATH", cert.as_str())],
            "TLS_CERT_PATH and TLS_KEY_PATH: set both",
        ),
        (
            vec![("TLS_CERT_PATH", missing), ("TLS_KEY_PATH", key.as_str())],
            "TLS_CERT_PATH (",
        ),
        (
            vec![
                ("TLS_CERT_PATH", cert.as_str()),
                ("TLS_KEY_PATH", other_key.as_str()),
            ],
            "does not belong to the certificate",
        ),
        (
            vec![
                ("TLS_CERT_PATH", key.as_str()),
                ("TLS_KEY_PATH", key.as_str()),
            ],
            "no certificate",
        ),
        (
            vec![("TLS_CLIENT_CA_PATH", ca.path())],
            "client certificates need TLS on",
        ),
    ] {
        let (code, stderr) = common::run_to_exit(&env, &[]);
        assert!(
            code != 0 && stderr.contains(expect),
            "{env:?}: {code} {stderr}"
        );
    }
}
