//! Kafka connection settings and their librdkafka properties.

use rdkafka::ClientConfig;
use std::path::PathBuf;
use std::time::Duration;

/// SASL mechanisms FireScroll supports (FireScroll used SCRAM-SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }

    fn property(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Everything the Kafka log needs to know.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Seed brokers, `host:port,...` (KAFKA_SEEDS).
    pub seeds: String,
    pub namespace: String,
    pub region: String,
    pub replica_group: String,
    /// Static group membership id (INSTANCE_ID); unique per node.
    pub instance_id: String,
    pub partitions: u32,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Longest a fetch waits at the broker for new entries. Brokers that hold a fetch for its full
    /// wait (instead of answering when data arrives) add up to this much write-to-visible delay.
    pub fetch_wait: Duration,
    /// SASL credentials (KAFKA_USER / KAFKA_PASS); used only when both are set.
    pub sasl: Option<(String, String)>,
    pub sasl_mechanism: SaslMechanism,
    /// TLS to the brokers (KAFKA_TLS=1).
    pub tls: bool,
    /// CA bundle for TLS (KAFKA_TLS_CA_PATH).
    pub tls_ca_path: Option<PathBuf>,
    /// How long a produce may take before the write fails (503).
    pub produce_timeout: Duration,
    pub linger: Duration,
    /// `none`, `gzip`, `snappy` or `lz4`.
    pub compression: String,
    /// Create missing topics (else refuse to start).
    pub create_topics: bool,
    /// Replication factor for topics FireScroll creates.
    pub replication_factor: i32,
    /// Largest entry the producer sends.
    pub max_entry_bytes: usize,
}

impl KafkaSettings {
    /// `firescroll_{ns}_mutations`: the write-ahead log.
    pub fn mutations_topic(&self) -> String {
        format!("firescroll_{}_mutations", self.namespace)
    }

    /// `firescroll_{ns}_partitions`: pins the partition count.
    pub fn partitions_topic(&self) -> String {
        format!("firescroll_{}_partitions", self.namespace)
    }

    /// `firescroll_{ns}_plugins`: plugin modules and name bindings (compacted).
    pub fn plugins_topic(&self) -> String {
        format!("firescroll_{}_plugins", self.namespace)
    }

    /// `firescroll_{ns}_{region}_{replica_group}`: one consumer group per replica group.
    pub fn group_id(&self) -> String {
        format!(
            "firescroll_{}_{}_{}",
            self.namespace, self.region, self.replica_group
        )
    }

    /// Connection and security properties shared by every client.
    pub fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.seeds)
            .set("client.id", format!("firescroll-{}", self.instance_id))
            .set("log_level", "4");
        let protocol = match (self.sasl.is_some(), self.tls) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some((user, pass)) = &self.sasl {
            config
                .set("sasl.mechanisms", self.sasl_mechanism.property())
                .set("sasl.username", user)
                .set("sasl.password", pass);
        }
        if let Some(ca) = &self.tls_ca_path {
            config.set("ssl.ca.location", ca.display().to_string());
        }
        config
    }

    /// The producer: every write is acknowledged by all in-sync replicas, idempotent, ordered.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", &self.compression)
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.produce_timeout.as_millis().to_string(),
            )
            .set(
                "message.max.bytes",
                (self.max_entry_bytes + 4096).to_string(),
            );
        config
    }

    /// The group consumer. Offsets come from the local store, never from the group, and an
    /// offset the log no longer holds is an error, never a silent jump (`auto.offset.reset`).
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("group.id", self.group_id())
            .set("group.instance.id", &self.instance_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                self.heartbeat_interval.as_millis().to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string());
        config
    }

    /// A consumer outside any group, for reading the partitions topic.
    pub fn reader_config(&self) -> ClientConfig {
        let mut config = self.base_config();
        config
            .set("group.id", format!("{}_bootstrap", self.group_id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        config
    }
}

#[cfg(test)]
pub(crate) fn test_settings() -> KafkaSettings {
    KafkaSettings {
        seeds: "b1:9092,b2:9092".into(),
        namespace: "ns".into(),
        region: "iad".into(),
        replica_group: "rg1".into(),
        instance_id: "node-1".into(),
        partitions: 4,
        session_timeout: Duration::from_secs(10),
        heartbeat_interval: Duration::from_secs(3),
        fetch_wait: Duration::from_millis(50),
        sasl: None,
        sasl_mechanism: SaslMechanism::ScramSha256,
        tls: false,
        tls_ca_path: None,
        produce_timeout: Duration::from_secs(5),
        linger: Duration::from_millis(1),
        compression: "lz4".into(),
        create_topics: true,
        replication_factor: 1,
        max_entry_bytes: 1 << 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace_region_and_replica_group() {
        let s = test_settings();
        assert_eq!(s.mutations_topic(), "firescroll_ns_mutations");
        assert_eq!(s.partitions_topic(), "firescroll_ns_partitions");
        assert_eq!(s.group_id(), "firescroll_ns_iad_rg1");
    }

    #[test]
    fn plaintext_by_default() {
        let c = test_settings().base_config();
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("sasl.username"), None);
    }

    #[test]
    fn sasl_scram_and_tls_map_to_librdkafka_properties() {
        let mut s = test_settings();
        s.sasl = Some(("user".into(), "secret".into()));
        assert_eq!(
            s.base_config().get("security.protocol"),
            Some("sasl_plaintext")
        );
        assert_eq!(
            s.base_config().get("sasl.mechanisms"),
            Some("SCRAM-SHA-256")
        );
        s.tls = true;
        s.tls_ca_path = Some("/etc/ca.pem".into());
        s.sasl_mechanism = SaslMechanism::parse("scram-sha-512").unwrap();
        let c = s.base_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("user"));
        assert_eq!(c.get("sasl.password"), Some("secret"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        s.sasl = None;
        assert_eq!(s.base_config().get("security.protocol"), Some("ssl"));
        assert!(SaslMechanism::parse("PLAIN").is_none());
    }

    #[test]
    fn producer_is_durable_and_consumer_never_skips() {
        let s = test_settings();
        let p = s.producer_config();
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        let c = s.consumer_config();
        assert_eq!(c.get("group.instance.id"), Some("node-1"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(c.get("auto.offset.reset"), Some("error"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
