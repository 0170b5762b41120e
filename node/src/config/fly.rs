//! Fly.io: with `FLY_APP_NAME` set, settings not given by flag, environment or file come from
//! the variables Fly sets on every machine. They sit between the TOML file and the defaults, so
//! anything set explicitly still wins.
//!
//! | setting | from Fly |
//! |---|---|
//! | LISTEN_ADDR | `::` (6PN is IPv6; Fly's proxy reaches the machine on it too) |
//! | REGION | `FLY_REGION` |
//! | INSTANCE_ID | `FLY_MACHINE_ID` |
//! | REPLICA_GROUP | `FLY_PROCESS_GROUP` (a `[processes]` group; `app` when there is one) |
//! | ADVERTISE_ADDR | `FLY_PRIVATE_IP` (with the Kafka log) |
//! | GOSSIP_PEERS | `<FLY_REGION>.<FLY_APP_NAME>.internal:<GOSSIP_PORT>` (with the Kafka log; its AAAA records are re-resolved while the node runs) |
//!
//! S3 takes `BUCKET_NAME`, `AWS_ENDPOINT_URL_S3` and `AWS_REGION` (what `fly storage create`
//! sets) in `resolve.rs`, Fly or not.

use super::Settings;

/// The `FLY_*` variables a machine runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlyEnv {
    pub app_name: String,
    pub region: Option<String>,
    pub machine_id: Option<String>,
    pub private_ip: Option<String>,
    pub process_group: Option<String>,
}

impl FlyEnv {
    /// Reads the variables through `var`; `None` unless `FLY_APP_NAME` is set.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Option<FlyEnv> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        Some(FlyEnv {
            app_name: var("FLY_APP_NAME")?,
            region: var("FLY_REGION"),
            machine_id: var("FLY_MACHINE_ID"),
            private_ip: var("FLY_PRIVATE_IP"),
            process_group: var("FLY_PROCESS_GROUP"),
        })
    }

    /// The process's own variables.
    pub fn from_process() -> Option<FlyEnv> {
        Self::read(|name| std::env::var(name).ok())
    }

    /// Fills the settings neither `given` nor `file` set from Fly's variables, and returns what
    /// it filled (setting name, value) for the log at start.
    pub fn fill(&self, given: &mut Settings, file: &Settings) -> Vec<(&'static str, String)> {
        let mut derived = Vec::new();
        macro_rules! unset {
            ($field:ident) => {
                given.$field.is_none() && file.$field.is_none()
            };
        }
        if unset!(listen_addr) {
            given.listen_addr = Some(std::net::Ipv6Addr::UNSPECIFIED.into());
            derived.push(("LISTEN_ADDR", "::".to_string()));
        }
        if let Some(region) = &self.region
            && unset!(region)
        {
            given.region = Some(region.clone());
            derived.push(("REGION", region.clone()));
        }
        if let Some(id) = &self.machine_id
            && unset!(instance_id)
        {
            given.instance_id = Some(id.clone());
            derived.push(("INSTANCE_ID", id.clone()));
        }
        if let Some(group) = &self.process_group
            && unset!(replica_group)
        {
            given.replica_group = Some(group.clone());
            derived.push(("REPLICA_GROUP", group.clone()));
        }
        // Gossip finds the region's other machines; on the embedded log a node is alone.
        let kafka = given.kafka_seeds.is_some() || file.kafka_seeds.is_some();
        if !kafka {
            return derived;
        }
        if let Some(ip) = &self.private_ip
            && unset!(advertise_addr)
        {
            given.advertise_addr = Some(ip.clone());
            derived.push(("ADVERTISE_ADDR", ip.clone()));
        }
        let region = given.region.clone().or(file.region.clone());
        if let Some(region) = region
            && unset!(gossip_peers)
        {
            let port = given.gossip_port.or(file.gossip_port).unwrap_or(8192);
            let seed = format!("{region}.{}.internal:{port}", self.app_name);
            given.gossip_peers = Some(vec![seed.clone()]);
            derived.push(("GOSSIP_PEERS", seed));
        }
        derived
    }
}
