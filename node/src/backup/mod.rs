//! S3 snapshots of partitions: the snapshot format, manifests written after their objects,
//! listing, verified fetches and retention. The engine restores from them when it opens a
//! partition (`engine/ownership.rs`); the service takes them (`service/snapshots.rs`).
//!
//! Keys under `S3_PREFIX` (default `firescroll/{namespace}`):
//! `p{partition:05}/{next_offset:020}-{node}.snap.gz` (the object) and the same name with
//! `.json` (its manifest). Offsets are zero-padded so keys sort numerically; the node id in the
//! name means two uploaders never overwrite each other; only a manifest makes a snapshot
//! visible, and it is written once its object is complete.

pub mod format;
pub mod plugins;
pub mod upload;

pub use format::{Decoded, FORMAT_VERSION, FormatError, Header, Trailer};
pub use plugins::{BackedUpBinding, BackedUpPlugin};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Where snapshots go and how often.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix; `{namespace}` is replaced by the namespace.
    pub prefix: String,
    /// Any S3-compatible endpoint (MinIO, R2, Tigris); addressed path-style.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Send and check checksums only when the operation requires them (for S3-compatible
    /// stores that reject the SDK's default CRC32 headers).
    pub checksums_when_required: bool,
    /// How often each owned partition is snapshotted (when it changed enough).
    pub interval: Duration,
    /// Skip a partition that applied fewer entries than this since its last snapshot.
    pub min_entries: u64,
    /// Verified snapshots kept per partition.
    pub keep: usize,
    /// An object without a manifest (its upload died) older than this is deleted.
    pub orphan_grace: Duration,
    /// Size of the parts a snapshot object is uploaded in (at least 5 MiB, S3's minimum).
    pub part_bytes: usize,
    /// How long the log keeps entries (LOG_RETENTION), when known: snapshots must stay younger
    /// than half of it so the log always continues the newest one.
    pub log_retention: Option<Duration>,
}

/// A snapshot's manifest: written last, it makes the snapshot visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub namespace: String,
    pub partitions: u32,
    pub partition: u32,
    /// The offset the partition applies next: the snapshot holds every entry below it.
    pub next_offset: u64,
    pub records: u64,
    /// SHA-256 of the records, equal to the partition digest at `next_offset`.
    pub content_sha256: String,
    pub object_key: String,
    /// SHA-256 and size of the object as stored.
    pub object_sha256: String,
    pub object_bytes: u64,
    pub created_at_ms: i64,
    pub node: String,
}

/// Why a snapshot operation failed. S3 trouble never stops apply or reads.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("S3 {operation} {key}: {reason}")]
    S3 {
        operation: &'static str,
        key: String,
        reason: String,
    },
    #[error("snapshot {key}: {source}")]
    Format {
        key: String,
        #[source]
        source: FormatError,
    },
    #[error("snapshot {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The snapshot store of one namespace.
pub struct Snapshots {
    client: Client,
    settings: S3Settings,
    prefix: String,
    namespace: String,
    partitions: u32,
    node: String,
}

impl Snapshots {
    /// A client for `settings`, writing as `node`.
    pub fn new(settings: S3Settings, namespace: &str, partitions: u32, node: &str) -> Snapshots {
        // A store that hangs must not hold a snapshot pass (or a partition's restore) forever.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(120))
            .operation_timeout(Duration::from_secs(300))
            .build();
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .timeout_config(timeouts);
        if let (Some(key), Some(secret)) = (&settings.access_key, &settings.secret_key) {
            config = config.credentials_provider(Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "firescroll-settings",
            ));
        }
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        if settings.checksums_when_required {
            config = config
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let prefix = settings
            .prefix
            .replace("{namespace}", namespace)
            .trim_end_matches('/')
            .to_string();
        Snapshots {
            client: Client::from_conf(config.build()),
            prefix,
            settings,
            namespace: namespace.to_string(),
            partitions,
            node: node.to_string(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    pub(super) fn partition_prefix(&self, partition: u32) -> String {
        format!("{}/p{partition:05}/", self.prefix)
    }

    /// The header a snapshot of `partition` at `next_offset` carries.
    pub fn header(&self, partition: u32, next_offset: u64) -> Header {
        Header {
            namespace: self.namespace.clone(),
            partition,
            partitions: self.partitions,
            next_offset,
        }
    }

    /// Every manifest of `partition` (or of all partitions), oldest first. Manifests that do
    /// not parse are skipped with a warning.
    pub async fn list(&self, partition: Option<u32>) -> Result<Vec<Manifest>, BackupError> {
        let prefix = match partition {
            Some(p) => self.partition_prefix(p),
            None => format!("{}/", self.prefix),
        };
        let mut manifests = Vec::new();
        let plugins = self.plugins_prefix();
        for (key, _) in self.keys(&prefix).await? {
            // Manifests only: the plugin backups (`plugins/`) live under the prefix too.
            if !key.ends_with(".json") || key.starts_with(&plugins) {
                continue;
            }
            let bytes = self.get(&key).await?;
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => manifests.push(m),
                Err(e) => tracing::warn!(key, error = %e, "unreadable snapshot manifest; skipped"),
            }
        }
        manifests.sort_by(|a, b| {
            (a.partition, a.next_offset, &a.node).cmp(&(b.partition, b.next_offset, &b.node))
        });
        Ok(manifests)
    }

    /// Downloads and verifies the snapshot `manifest` names: object size and hash, the records'
    /// hash, and that it is the snapshot the manifest says.
    pub async fn fetch(&self, manifest: &Manifest) -> Result<Decoded, BackupError> {
        let key = &manifest.object_key;
        let invalid = |reason: String| BackupError::Invalid {
            key: key.clone(),
            reason,
        };
        let bytes = self.get(key).await?;
        let sha = crate::model::Digest::of(&bytes).to_string();
        if bytes.len() as u64 != manifest.object_bytes || sha != manifest.object_sha256 {
            return Err(invalid(format!(
                "the object is {} bytes with sha256 {sha}; its manifest says {} bytes, {}",
                bytes.len(),
                manifest.object_bytes,
                manifest.object_sha256
            )));
        }
        let decoded = format::decode(&bytes).map_err(|source| BackupError::Format {
            key: key.clone(),
            source,
        })?;
        if decoded.trailer.sha256 != manifest.content_sha256
            || decoded.header.partition != manifest.partition
            || decoded.header.next_offset != manifest.next_offset
        {
            return Err(invalid(
                "the object is not the snapshot its manifest describes".into(),
            ));
        }
        Ok(decoded)
    }

    /// Keeps the newest `SNAPSHOT_KEEP` snapshots of `partition` and deletes older ones
    /// (manifest first, so no visible snapshot ever lacks its object), and objects without a
    /// manifest older than SNAPSHOT_ORPHAN_GRACE (an upload that died). Returns how many objects
    /// went.
    pub async fn retain(&self, partition: u32) -> Result<usize, BackupError> {
        let keep = self.settings.keep.max(1);
        let manifests = self.list(Some(partition)).await?;
        let mut deleted = 0;
        let expired = manifests.len().saturating_sub(keep);
        for manifest in &manifests[..expired] {
            let name = manifest.object_key.trim_end_matches(".snap.gz");
            self.delete(&format!("{name}.json")).await?;
            self.delete(&manifest.object_key).await?;
            deleted += 1;
        }
        let live: Vec<&str> = manifests[expired..]
            .iter()
            .map(|m| m.object_key.as_str())
            .collect();
        for (key, modified) in self.keys(&self.partition_prefix(partition)).await? {
            let orphan = key.ends_with(".snap.gz") && !live.contains(&key.as_str()) && {
                let name = key.trim_end_matches(".snap.gz");
                !manifests
                    .iter()
                    .any(|m| m.object_key.trim_end_matches(".snap.gz") == name)
            };
            let old = modified
                .is_some_and(|t| t.elapsed().unwrap_or_default() >= self.settings.orphan_grace);
            if orphan && old {
                self.delete(&key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    pub(super) async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BackupError> {
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", key, e))?;
        Ok(())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>, BackupError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", key, e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| s3_error("GetObject", key, e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn delete(&self, key: &str) -> Result<(), BackupError> {
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", key, e))?;
        Ok(())
    }

    /// Every key under `prefix`, with its last-modified time.
    pub(super) async fn keys(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<SystemTime>)>, BackupError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let modified = object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok());
                    keys.push((key.to_string(), modified));
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(keys),
            }
        }
    }
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snapshots(s3://{}/{})",
            self.settings.bucket, self.prefix
        )
    }
}

pub(super) fn s3_error(
    operation: &'static str,
    key: &str,
    e: impl std::error::Error,
) -> BackupError {
    // The SDK's Display is terse ("service error"); its source chain says what happened.
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    BackupError::S3 {
        operation,
        key: key.to_string(),
        reason,
    }
}
