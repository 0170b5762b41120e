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

pub use format::{FORMAT_VERSION, FormatError, Header, Reader, Trailer};
pub use plugins::{BackedUpBinding, BackedUpPlugin};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    #[error("snapshot {key}: its local copy {}: {source}", .path.display())]
    Local {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A snapshot downloaded into a file and verified whole (the object's size and hash, then
/// every record against its trailer and the header against the manifest):
/// [`SnapshotFile::records`] reads the records again, one at a time. The file is removed
/// when this is dropped.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    key: String,
}

impl SnapshotFile {
    /// The snapshot's records from the start, read from the file as they are taken.
    pub fn records(&self) -> Result<Reader<std::fs::File>, BackupError> {
        let file = std::fs::File::open(&self.path).map_err(|source| self.local(source))?;
        Reader::new(file).map_err(|source| BackupError::Format {
            key: self.key.clone(),
            source,
        })
    }

    fn local(&self, source: std::io::Error) -> BackupError {
        BackupError::Local {
            key: self.key.clone(),
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
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

    /// The header a snapshot of `partition` at `next_offset`, whose last entry applied was
    /// `last_entry`, carries.
    pub fn header(
        &self,
        partition: u32,
        next_offset: u64,
        last_entry: Option<crate::model::AppliedEntry>,
    ) -> Header {
        Header {
            namespace: self.namespace.clone(),
            partition,
            partitions: self.partitions,
            next_offset,
            last_entry,
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

    /// Downloads the snapshot `manifest` names into a file in `dir` as it arrives (memory
    /// stays at one chunk whatever its size) and verifies it: object size and hash, the
    /// records' hash, and that it is the snapshot the manifest says. The file is removed when
    /// the [`SnapshotFile`] is dropped (what a stopped node left, its engine removes at start).
    pub async fn fetch_to(
        &self,
        manifest: &Manifest,
        dir: &Path,
    ) -> Result<SnapshotFile, BackupError> {
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt;
        let key = &manifest.object_key;
        let invalid = |reason: String| BackupError::Invalid {
            key: key.clone(),
            reason,
        };
        let snapshot = SnapshotFile {
            path: dir.join(format!(
                "p{:05}-{:020}.snap.gz",
                manifest.partition, manifest.next_offset
            )),
            key: key.clone(),
        };
        let local = |source| snapshot.local(source);
        tokio::fs::create_dir_all(dir).await.map_err(local)?;
        let mut body = self.object(key).await?;
        let mut file = tokio::fs::File::create(&snapshot.path)
            .await
            .map_err(local)?;
        let mut hasher = sha2::Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| s3_error("GetObject", key, e))?;
            bytes += chunk.len() as u64;
            if bytes > manifest.object_bytes {
                return Err(invalid(format!(
                    "the object is larger than the {} bytes its manifest says",
                    manifest.object_bytes
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        drop(file);
        let sha = crate::model::Digest::from(hasher).to_string();
        if bytes != manifest.object_bytes || sha != manifest.object_sha256 {
            return Err(invalid(format!(
                "the object is {bytes} bytes with sha256 {sha}; its manifest says {} bytes, {}",
                manifest.object_bytes, manifest.object_sha256
            )));
        }
        // Every record against the trailer before any replaces the partition's state: a
        // snapshot that does not verify is skipped with nothing changed.
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = snapshot.records()?;
            let format = |source| BackupError::Format {
                key: manifest.object_key.clone(),
                source,
            };
            for record in reader.by_ref() {
                record.map_err(format)?;
            }
            let (header, trailer) = (reader.header(), reader.trailer());
            if trailer.is_none_or(|t| t.sha256 != manifest.content_sha256)
                || header.partition != manifest.partition
                || header.next_offset != manifest.next_offset
            {
                return Err(BackupError::Invalid {
                    key: manifest.object_key.clone(),
                    reason: "the object is not the snapshot its manifest describes".into(),
                });
            }
            drop(reader);
            Ok(snapshot)
        })
        .await
        .unwrap_or_else(|e| Err(invalid(format!("verifying it stopped: {e}"))))
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

    /// The body of object `key`, to be read as it arrives.
    async fn object(&self, key: &str) -> Result<ByteStream, BackupError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", key, e))?;
        Ok(out.body)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>, BackupError> {
        let body = self
            .object(key)
            .await?
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
