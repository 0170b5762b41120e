//! Uploading a snapshot while it is encoded: the encoder (on a blocking thread) writes into a
//! [`PartSink`], which hands the uploader parts of `S3Settings::part_bytes` through a bounded
//! channel; an object of one part is one PutObject, a larger one a multipart upload (aborted if
//! anything fails). Memory stays at a few parts whatever the partition's size.

use super::{BackupError, Manifest, Snapshots, Trailer, format::Header, s3_error};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use tokio::sync::mpsc;

/// Smallest part S3 accepts (every part of a multipart upload but the last).
pub const MIN_PART_BYTES: usize = 5 << 20;

/// The encoder's side: collects bytes into parts and sends each full one to the uploader,
/// hashing and counting the object on the way.
pub struct PartSink {
    part: Vec<u8>,
    part_bytes: usize,
    tx: mpsc::Sender<Vec<u8>>,
    hasher: Sha256,
    size: u64,
}

/// The object as uploaded: its SHA-256 (hex) and size.
pub struct ObjectSummary {
    pub sha256: String,
    pub bytes: u64,
}

/// A channel pair for one snapshot's parts: the sink for the encoder, the receiver for
/// [`Snapshots::upload_parts`].
pub fn part_channel(part_bytes: usize) -> (PartSink, mpsc::Receiver<Vec<u8>>) {
    // Two parts in flight: the encoder fills the next while one uploads.
    let (tx, rx) = mpsc::channel(2);
    let sink = PartSink {
        part: Vec::with_capacity(part_bytes),
        part_bytes,
        tx,
        hasher: Sha256::new(),
        size: 0,
    };
    (sink, rx)
}

impl PartSink {
    fn send(&mut self) -> std::io::Result<()> {
        let full = std::mem::replace(&mut self.part, Vec::with_capacity(self.part_bytes));
        self.tx
            .blocking_send(full)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends the last part and closes the channel.
    pub fn finish(mut self) -> std::io::Result<ObjectSummary> {
        if !self.part.is_empty() {
            self.send()?;
        }
        Ok(ObjectSummary {
            sha256: crate::model::Digest::from(self.hasher).to_string(),
            bytes: self.size,
        })
    }
}

impl Write for PartSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.part_bytes - self.part.len();
        let taken = &buf[..buf.len().min(room)];
        self.part.extend_from_slice(taken);
        self.hasher.update(taken);
        self.size += taken.len() as u64;
        if self.part.len() >= self.part_bytes {
            self.send()?;
        }
        Ok(taken.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Snapshots {
    /// Uploads the parts `parts` brings as one object, then the manifest. `encoded` resolves
    /// once the encoder is done, with the trailer and the object's hash and size; the manifest
    /// is written only after the object is complete.
    pub async fn upload_parts(
        &self,
        header: &Header,
        mut parts: mpsc::Receiver<Vec<u8>>,
        encoded: impl std::future::Future<Output = Result<(Trailer, ObjectSummary), BackupError>>,
    ) -> Result<Manifest, BackupError> {
        let name = format!(
            "{}{:020}-{}",
            self.partition_prefix(header.partition),
            header.next_offset,
            self.node
        );
        let object_key = format!("{name}.snap.gz");
        let first = parts.recv().await;
        let second = match first {
            Some(_) => parts.recv().await,
            None => None,
        };
        let (trailer, object) = match second {
            None => {
                let done = encoded.await?;
                self.put(&object_key, first.unwrap_or_default()).await?;
                done
            }
            Some(second) => {
                let upload = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.settings.bucket)
                    .key(&object_key)
                    .send()
                    .await
                    .map_err(|e| s3_error("CreateMultipartUpload", &object_key, e))?;
                let id = upload.upload_id().unwrap_or_default().to_string();
                let uploaded = self
                    .upload_all(
                        &object_key,
                        &id,
                        [first.unwrap_or_default(), second],
                        parts,
                        encoded,
                    )
                    .await;
                if uploaded.is_err() {
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.settings.bucket)
                        .key(&object_key)
                        .upload_id(&id)
                        .send()
                        .await;
                }
                uploaded?
            }
        };
        let manifest = Manifest {
            format: super::FORMAT_VERSION,
            namespace: self.namespace.clone(),
            partitions: self.partitions,
            partition: header.partition,
            next_offset: header.next_offset,
            records: trailer.records,
            content_sha256: trailer.sha256.clone(),
            object_key: object_key.clone(),
            object_sha256: object.sha256,
            object_bytes: object.bytes,
            created_at_ms: crate::model::now_ms(),
            node: self.node.clone(),
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        self.put(&format!("{name}.json"), json).await?;
        Ok(manifest)
    }

    async fn upload_all(
        &self,
        key: &str,
        id: &str,
        first: [Vec<u8>; 2],
        mut parts: mpsc::Receiver<Vec<u8>>,
        encoded: impl std::future::Future<Output = Result<(Trailer, ObjectSummary), BackupError>>,
    ) -> Result<(Trailer, ObjectSummary), BackupError> {
        let mut completed = Vec::new();
        let mut pending = first.into_iter().collect::<std::collections::VecDeque<_>>();
        loop {
            let body = match pending.pop_front() {
                Some(body) => body,
                None => match parts.recv().await {
                    Some(body) => body,
                    None => break,
                },
            };
            let number = completed.len() as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(&self.settings.bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", key, e))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        let done = encoded.await?;
        let count = completed.len();
        self.client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", key, e))?;
        tracing::debug!(key, parts = count, "snapshot object uploaded in parts");
        Ok(done)
    }
}
