//! Test harness: runs the real `firescroll` binary on free loopback ports with its own data
//! directory, and talks to it over real HTTP.
#![allow(dead_code)]

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_firescroll");

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: all are held until all are chosen, so none repeats.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// One running node.
pub struct Node {
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    pub data: PathBuf,
    pub api: u16,
    pub internal: u16,
    pub resp: u16,
    env: Vec<(String, String)>,
    /// A program the node is started through (its arguments, then the node's path), if any.
    launcher: Vec<String>,
    client: reqwest::blocking::Client,
    log_path: PathBuf,
    /// Where the log of the process started last begins (a restart appends to the same file).
    log_start: u64,
}

impl Node {
    /// A fresh node on the embedded log.
    pub fn start() -> Node {
        Self::start_with(&[])
    }

    /// A fresh node with extra environment settings.
    pub fn start_with(env: &[(&str, &str)]) -> Node {
        Self::start_under(&[], env)
    }

    /// A fresh node started through `launcher` (a program and its arguments, given the node's
    /// path last: `prlimit --nofile=256:8192 --`), with extra environment settings.
    pub fn start_under(launcher: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Self::unstarted(dir.path(), env);
        node.launcher = launcher.iter().map(|a| a.to_string()).collect();
        node._dir = Some(dir);
        node.start_unstarted()
    }

    /// A fresh node whose data and log live under `base` (which the caller keeps and removes).
    pub fn start_in(base: &Path, env: &[(&str, &str)]) -> Node {
        Self::unstarted(base, env).start_unstarted()
    }

    fn start_unstarted(self) -> Node {
        let mut node = self;
        // The ports were free when chosen, but released again so the node can bind them: another
        // process may take one meanwhile. A fresh node then gets new ports and tries again.
        for attempt in 1..=3 {
            node.spawn_process();
            match node.try_wait_up() {
                Ok(()) => return node,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    [node.api, node.internal, node.resp] = free_ports();
                    let _ = std::fs::remove_file(&node.log_path);
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn unstarted(base: &Path, env: &[(&str, &str)]) -> Node {
        let [api, internal, resp] = free_ports();
        Node {
            child: None,
            _dir: None,
            data: base.join("data"),
            api,
            internal,
            resp,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            launcher: Vec::new(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            log_path: base.join("node.log"),
            log_start: 0,
        }
    }

    /// Starts the process and waits until `/up` answers.
    pub fn spawn(&mut self) {
        self.spawn_process();
        self.wait_up();
    }

    /// Starts the process without waiting for it to answer (to catch it while it starts).
    pub fn spawn_process(&mut self) {
        self.log_start = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = match self.launcher.split_first() {
            None => Command::new(BIN),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
        };
        cmd.env_clear()
            .env("DB_PATH", &self.data)
            .env("API_PORT", self.api.to_string())
            .env("INTERNAL_PORT", self.internal.to_string())
            .env("RESP_PORT", self.resp.to_string())
            .env("LISTEN_ADDR", "127.0.0.1")
            .env("CHECKPOINT_INTERVAL_MS", "200")
            .env("LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn firescroll"));
    }

    fn wait_up(&mut self) {
        if let Err(log) = self.try_wait_up() {
            panic!("{log}");
        }
    }

    /// Waits until `/up` answers; the reason and the node's log if it exits or never does.
    fn try_wait_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "firescroll exited with {status} while starting:\n{}",
                    self.log()
                ));
            }
            // `/up` may be answered by another test's node that took one of these ports while
            // they were free (this node then fails to bind and exits): only this node's own log
            // saying it serves (written once it holds all its ports) makes the answer its own.
            // With TLS on, the API port speaks HTTPS: the internal port answers `/up` too.
            let up_url = if self.env.iter().any(|(k, _)| k == "TLS_CERT_PATH") {
                self.internal_url("/up")
            } else {
                self.url("/up")
            };
            let up = self
                .client
                .get(up_url)
                .send()
                .is_ok_and(|r| r.status().is_success());
            if up && self.serving_since_spawn() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = if up {
                    "something answers /up on its port, but this node's log never said \
                     \"firescroll is serving\" (another process holds the port, or LOG_LEVEL \
                     hides info lines)"
                } else {
                    "/up never answered"
                };
                return Err(format!(
                    "firescroll did not come up: {why}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTP client the harness uses (for calls beyond `post`).
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.internal)
    }

    /// POSTs raw bytes; returns (status, body text).
    pub fn post_raw(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request failed");
        (r.status().as_u16(), r.text().unwrap())
    }

    /// POSTs JSON; returns (status, body as JSON).
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, body.to_string());
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text}"));
        (status, json)
    }

    /// GETs a URL (public or internal); returns (status, body).
    /// A POST of `body` to `path`: status, JSON answer, and its FireScroll-Token header ("" when
    /// it has none).
    pub fn post_with_token(&self, path: &str, body: &Value) -> (u16, Value, String) {
        let response = self
            .client
            .post(self.url(path))
            .body(body.to_string())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let token = response
            .headers()
            .get("firescroll-token")
            .map(|t| t.to_str().unwrap().to_string())
            .unwrap_or_default();
        let answer = serde_json::from_str(&response.text().unwrap()).unwrap();
        (status, answer, token)
    }

    pub fn get_url(&self, url: &str) -> (u16, String) {
        let r = self.client.get(url).send().expect("request failed");
        (r.status().as_u16(), r.text().unwrap())
    }

    /// `/debug/partitions` as JSON.
    pub fn partitions(&self) -> Vec<Value> {
        let (_, body) = self.get_url(&self.internal_url("/debug/partitions"));
        let v: Value = serde_json::from_str(&body).unwrap();
        v["partitions"].as_array().unwrap().clone()
    }

    /// (partition, applied offset, digest) of every partition this node serves: two replicas
    /// that applied the same log have equal lists.
    pub fn digests(&self) -> Vec<(Value, Value, Value)> {
        self.partitions()
            .iter()
            .map(|p| {
                (
                    p["partition"].clone(),
                    p["applied_offset"].clone(),
                    p["digest"].clone(),
                )
            })
            .collect()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the running process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// The sum of the node's `/metrics` samples whose line starts with `series` (a name and
    /// labels, or a name and a space), 0 when there is none yet.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get_url(&self.internal_url("/metrics"));
        text.lines()
            .filter_map(|l| {
                l.strip_prefix(series)?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum()
    }

    /// The process's resident memory, in MiB.
    pub fn resident_mib(&self) -> u64 {
        let child = self.child.as_ref().expect("node is running");
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .expect("VmRSS in /proc/<pid>/status")
            / 1024
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "firescroll ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process started last logged that it serves (it holds all its ports).
    fn serving_since_spawn(&self) -> bool {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let since = log.get(self.log_start as usize..).unwrap_or_default();
        since
            .windows(b"firescroll is serving".len())
            .any(|w| w == b"firescroll is serving")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the binary to completion with `env` and no data; returns (exit code, stderr).
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let [api, internal, resp] = free_ports();
    let out = Command::new(BIN)
        .env_clear()
        .env("DB_PATH", dir.path().join("data"))
        .env("API_PORT", api.to_string())
        .env("INTERNAL_PORT", internal.to_string())
        .env("RESP_PORT", resp.to_string())
        .env("LISTEN_ADDR", "127.0.0.1")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces every RFC 3339 millisecond timestamp string in `v` with `"<time>"`.
pub fn normalize_times(v: &mut Value) {
    match v {
        Value::String(s) if is_timestamp(s) => *s = "<time>".into(),
        Value::Array(items) => items.iter_mut().for_each(normalize_times),
        Value::Object(map) => map.values_mut().for_each(normalize_times),
        _ => {}
    }
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s[..4].bytes().all(|c| c.is_ascii_digit())
}

/// A real Kafka-protocol broker (nisshi) on a free loopback port with its own data directory.
/// The binary comes from `NISSHI_BIN` (scripts/test.sh sets it) or the default install path.
pub struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let mut broker = Broker {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        };
        broker.spawn();
        broker
    }

    fn bin() -> PathBuf {
        let path = std::env::var_os("NISSHI_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/nisshi-0.8.1/bin/nisshi")
            });
        assert!(
            path.exists(),
            "the Kafka-protocol broker is not installed at {}: run scripts/test.sh (or scripts/kafka-broker.sh install)",
            path.display()
        );
        path
    }

    /// (Re)starts the broker on the same port and data.
    pub fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .unwrap();
        let child = Command::new(Self::bin())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "sqlite://nisshi.db",
                "--group-initial-rebalance-delay",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nisshi");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn seeds(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, clean).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Environment for a node on `broker` in `namespace`, one of `replica_group`, as `instance`.
pub fn kafka_env(
    broker: &Broker,
    namespace: &str,
    replica_group: &str,
    instance: &str,
) -> Vec<(String, String)> {
    [
        ("KAFKA_SEEDS", broker.seeds()),
        ("NAMESPACE", namespace.to_string()),
        ("REGION", "test".to_string()),
        ("REPLICA_GROUP", replica_group.to_string()),
        ("INSTANCE_ID", instance.to_string()),
        ("KAFKA_SESSION_MS", "2000".to_string()),
        ("KAFKA_HEARTBEAT_MS", "300".to_string()),
        ("KAFKA_PRODUCE_TIMEOUT_MS", "3000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Node {
    /// A fresh node with the given environment (owned strings).
    pub fn start_env(env: &[(String, String)]) -> Node {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_with(&pairs)
    }

    /// Sets (or replaces) one environment setting for the next `spawn`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Partition ids this node owns, from `/debug/partitions`.
    pub fn owned(&self) -> Vec<u64> {
        self.partitions()
            .iter()
            .map(|p| p["partition"].as_u64().unwrap())
            .collect()
    }

    /// Waits until `check` holds for this node, or panics with `what` and the node's log.
    pub fn wait_until(&self, what: &str, timeout: Duration, check: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a client script written by others' libraries (redis-py, ioredis, ...) that prints `ok`
/// once all its own asserts held; fails with its output otherwise. `install` says how to get the
/// tool (scripts/test.sh does).
pub fn assert_script_ok(command: &mut std::process::Command, install: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} ({install}): {e}"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{install}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real S3-compatible server (s3s-fs, checking SigV4) on a free loopback port, with one bucket
/// `snaps`, its data in a temporary folder. scripts/test.sh installs it
/// (`scripts/s3-server.sh install`).
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: tempfile::TempDir,
}

impl S3Server {
    pub const BUCKET: &'static str = "snaps";
    pub const KEY: &'static str = "testkey";
    pub const SECRET: &'static str = "testsecret";

    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(Self::BUCKET)).unwrap();
        let mut server = S3Server {
            child: None,
            port: free_port(),
            root,
        };
        server.spawn();
        server
    }

    /// Stops the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL ends a stopped process too
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`: a server that accepts connections and never answers; `CONT`).
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("s3s-fs is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Starts the server again on the same port and data.
    pub fn spawn(&mut self) {
        let bin = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| {
            format!(
                "{}/.cache/s3s-fs-0.14.1/bin/s3s-fs",
                std::env::var("HOME").unwrap()
            )
        });
        let port = self.port;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::KEY, "--secret-key", Self::SECRET])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run s3s-fs at {bin} (scripts/s3-server.sh install; scripts/test.sh does): {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// The settings a node needs to snapshot to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("S3_BUCKET", Self::BUCKET.to_string()),
            ("S3_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ACCESS_KEY_ID", Self::KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }

    /// Where the server keeps the object stored under `key`.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(Self::BUCKET).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
