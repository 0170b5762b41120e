//! Following one partition's changes wherever the region applies it: from this node's feed when
//! it serves the partition, else from an owner through the peer watch (the same events, over
//! HTTP). Tokens are the log's positions, so a follower that loses its stream resumes exactly
//! on any owner. The Redis hub follows every partition this way.

use super::{ChangeEvent, Token, Watch, WatchEvent, WatchRequest};
use crate::service::{Service, ServiceError};
use serde::Deserialize;
use std::sync::Arc;

/// The most one event of a peer's stream may hold: a keys-only event is a few hundred bytes.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// A partition's changes (keys only), from this node or from an owner.
pub enum Follow {
    Local(Watch),
    Remote(RemoteWatch),
}

impl Follow {
    /// The next event; `None` when the stream ended (resume from the last token).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        match self {
            Follow::Local(watch) => watch.next().await,
            Follow::Remote(remote) => remote.next().await,
        }
    }

    /// Whether the changes come from this node.
    pub fn is_local(&self) -> bool {
        matches!(self, Follow::Local(_))
    }
}

/// An owner's keys-only watch of a partition, read as events.
pub struct RemoteWatch {
    response: crate::cluster::PeerStream,
    buffer: Vec<u8>,
    /// The buffer before this holds no event end: each chunk is searched once.
    searched: usize,
}

/// The fields of a change event a follower needs.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeData {
    op: String,
    partition: u32,
    offset: u64,
    pk: String,
    sk: String,
}

impl RemoteWatch {
    async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            let from = self.searched.saturating_sub(1);
            if let Some(end) = self.buffer[from..].windows(2).position(|w| w == b"\n\n") {
                let end = from + end;
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                self.searched = 0;
                if let Some(event) = parse_event(&block) {
                    return Some(event);
                }
                continue;
            }
            self.searched = self.buffer.len();
            if self.buffer.len() > MAX_EVENT_BYTES {
                return None;
            }
            match self.response.chunk().await {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return None,
            }
        }
    }
}

/// One Server-Sent Event as our watch writes it; `None` for comments (keep-alives) and events
/// a follower does not use.
fn parse_event(block: &[u8]) -> Option<WatchEvent> {
    let text = std::str::from_utf8(block).ok()?;
    let (mut kind, mut id, mut data) = ("message", None, String::new());
    for line in text.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value,
            "id" => id = Some(value.to_string()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    match kind {
        "bookmark" => Some(WatchEvent::Bookmark { token: id? }),
        "change" => {
            let data: ChangeData = serde_json::from_str(&data).ok()?;
            let op = match data.op.as_str() {
                "put" => "put",
                "delete" => "delete",
                "expired" => "expired",
                _ => return None,
            };
            Some(WatchEvent::Change {
                token: id?,
                change: Arc::new(ChangeEvent {
                    partition: data.partition,
                    offset: data.offset,
                    op,
                    pk: data.pk,
                    sk: data.sk,
                    record: None,
                    ts_ms: 0,
                }),
            })
        }
        "error" => Some(WatchEvent::End {
            code: "remote_watch_ended",
            reason: format!("the owner ended the watch: {data}"),
        }),
        _ => None,
    }
}

impl Service {
    /// Follows `partition`'s changes (keys only) from `from` (from now without it): this node's
    /// feed when it serves the partition, else an owner's in the region. A token older than the
    /// history is [`crate::service::ErrorKind::Gone`].
    pub async fn follow_partition(
        &self,
        partition: u32,
        from: Option<Token>,
    ) -> Result<Follow, ServiceError> {
        let request = WatchRequest {
            partition: Some(partition),
            keys_only: true,
            from: from.clone(),
            ..WatchRequest::default()
        };
        let cluster = match &self.cluster {
            Some(cluster) if !self.serves(partition) => cluster.clone(),
            _ => return self.watch(request).await.map(Follow::Local),
        };
        let query = format!("partition={partition}&keys_only=true");
        let last = from.map(|t| t.to_string());
        let owners = crate::service::remote::appliers(cluster.owners_own_group_first(partition));
        let response = self
            .first_answer(&cluster, "watch", partition, owners, |peer| {
                cluster.client().watch(peer.api, &query, last.as_deref())
            })
            .await?;
        Ok(Follow::Remote(RemoteWatch {
            response,
            buffer: Vec::new(),
            searched: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_as_the_watch_writes_them() {
        let change = parse_event(
            b"event: change\nid: 3:7.1\ndata: {\"Op\":\"delete\",\"Partition\":3,\"Offset\":7,\"Pk\":\"a\",\"Sk\":\"\",\"At\":\"x\"}\n\n",
        );
        let Some(WatchEvent::Change { token, change }) = change else {
            panic!("a change");
        };
        assert_eq!(token, "3:7.1");
        assert_eq!(
            (
                change.partition,
                change.offset,
                change.op,
                change.pk.as_str()
            ),
            (3, 7, "delete", "a")
        );
        assert!(matches!(
            parse_event(b"event:bookmark\nid:3:9\ndata:{}\n\n"),
            Some(WatchEvent::Bookmark { token }) if token == "3:9"
        ));
        assert!(parse_event(b":\n\n").is_none());
        assert!(matches!(
            parse_event(b"event: error\ndata: {}\n\n"),
            Some(WatchEvent::End { .. })
        ));
    }
}
