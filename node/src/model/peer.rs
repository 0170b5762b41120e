//! The internal read protocol between the nodes of a region: JSON over the peers' HTTP API
//! port, under `/cluster/v1/`. The cluster's client speaks it and the HTTP API serves it, so it
//! lives here, with the other formats nodes exchange. A peer answers only from its own partitions
//! — it never proxies again (hop limit 1) — so a routing disagreement costs one failed hop, never
//! a loop.

use super::{Key, KeyInfo, Outcome, Position, Record};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Path of point reads.
pub const GET_PATH: &str = "/cluster/v1/get";
/// Path of pk listings.
pub const LIST_PATH: &str = "/cluster/v1/list";
/// Path of entry outcomes.
pub const OUTCOMES_PATH: &str = "/cluster/v1/outcomes";
/// Path of key index pages and counts.
pub const KEYS_PATH: &str = "/cluster/v1/keys";
/// Path of a scan's page within one partition.
pub const SCAN_PATH: &str = "/cluster/v1/scan";

/// Point reads of keys in partitions the peer serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GetQuery {
    pub keys: Vec<Key>,
    /// Positions to wait for first (read-your-writes).
    pub min_offsets: Vec<Position>,
}

/// The answer to a [`GetQuery`]: one slot per key, in order, `None` where there is no record.
#[derive(Debug, Deserialize)]
pub struct GetReply {
    pub records: Vec<Option<WireRecord>>,
    /// The owner's watch token of the partitions asked, taken before it read (absent from
    /// peers that predate it): what the asking node's HTTP answer carries for them.
    #[serde(default)]
    pub token: Option<String>,
}

/// A record on the wire: data verbatim.
#[derive(Debug, Deserialize)]
pub struct WireRecord {
    /// Present in scan replies (their records are of many pks).
    #[serde(default)]
    pub pk: Option<String>,
    /// Present in list replies (get replies are aligned with the keys asked).
    #[serde(default)]
    pub sk: Option<String>,
    pub data: Box<RawValue>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The record's deadline, when it has one (absent from peers that predate expiry).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// The deadline is the record's own (sent only when true; a `WATCH` version hashes it).
    #[serde(default)]
    pub own_deadline: bool,
}

impl WireRecord {
    /// The model record, given the key it was read at.
    pub fn into_record(self, pk: String, sk: String) -> Record {
        Record {
            pk,
            sk,
            data_json: String::from(Box::<str>::from(self.data)),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            expires_at_ms: self.expires_at_ms,
            own_deadline: self.own_deadline,
        }
    }
}

/// Writes `record` as a [`WireRecord`] (with its sk when `with_sk`), its data verbatim.
pub fn render_record(out: &mut Vec<u8>, record: &Record, with_sk: bool) {
    render(out, record, None, with_sk.then_some(record.sk.as_str()));
}

/// Writes `record` as a [`WireRecord`] with its pk and sk (a scan's records), data verbatim.
pub fn render_keyed_record(out: &mut Vec<u8>, record: &Record) {
    render(out, record, Some(&record.pk), Some(&record.sk));
}

fn render(out: &mut Vec<u8>, record: &Record, pk: Option<&str>, sk: Option<&str>) {
    out.extend_from_slice(b"{");
    for (name, value) in [(&b"\"pk\":"[..], pk), (&b"\"sk\":"[..], sk)] {
        if let Some(value) = value {
            out.extend_from_slice(name);
            serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
            out.push(b',');
        }
    }
    out.extend_from_slice(b"\"data\":");
    out.extend_from_slice(record.data_json.as_bytes());
    out.extend_from_slice(
        format!(
            ",\"created_at_ms\":{},\"updated_at_ms\":{}",
            record.created_at_ms, record.updated_at_ms
        )
        .as_bytes(),
    );
    if let Some(deadline) = record.expires_at_ms {
        out.extend_from_slice(format!(",\"expires_at_ms\":{deadline}").as_bytes());
        if record.own_deadline {
            out.extend_from_slice(b",\"own_deadline\":true");
        }
    }
    out.push(b'}');
}

/// The answer to a [`ListRequest`](super::ListRequest).
#[derive(Debug, Deserialize)]
pub struct ListReply {
    pub records: Vec<WireRecord>,
    pub next_cursor: Option<String>,
    /// As [`GetReply::token`], for the pk's partition.
    #[serde(default)]
    pub token: Option<String>,
    /// See `ListPage::read_through` (absent from owners that predate it).
    #[serde(default)]
    pub read_through: Option<u64>,
}

/// Outcomes of entries, waiting (bounded) for them to be applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomesQuery {
    pub positions: Vec<Position>,
    /// How long the peer may wait for each position to be applied; 0 answers at once.
    pub wait_ms: u64,
}

/// The answer to an [`OutcomesQuery`]: `None` where not applied (yet).
#[derive(Debug, Serialize, Deserialize)]
pub struct OutcomesReply {
    pub outcomes: Vec<Option<Outcome>>,
}

/// A page of a partition's key index from a hash position on, and its key count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysQuery {
    pub partition: u32,
    /// The hash position to start at (inclusive).
    pub from: u64,
    /// Most keys to return (a page never splits one hash); 0 asks only for the count.
    pub limit: usize,
    /// Positions to wait for first (read-your-writes).
    pub min_offsets: Vec<Position>,
    /// A key whose record count to answer in [`KeysReply::records`] (`HLEN`). Releases before
    /// it ignore it and answer without the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<String>,
}

/// The answer to a [`KeysQuery`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysReply {
    pub keys: Vec<KeyInfo>,
    /// Where the next page starts; `None` when the partition has no more keys.
    pub next: Option<u64>,
    /// The partition's key count.
    pub count: u64,
    /// How many records [`KeysQuery::pk`] has that a read would return, when it was asked and
    /// can be answered at once (see `Service::record_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// The partition's watch token on the answering node, taken before reading (a scan of every
    /// record starts its watch there). Releases before it send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A scan's page within one partition the peer serves (see `service::scan`): its records from
/// `cursor` on, up to `limit` of them and `max_reads` reads, never past the partition's end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanQuery {
    /// A scan cursor naming the partition (where its walk stands).
    pub cursor: String,
    pub limit: usize,
    /// Most reads (key index entries asked, key lists) the page may take.
    pub max_reads: usize,
    /// Positions of the partition to wait for first (read-your-writes).
    pub min_offsets: Vec<Position>,
    /// Only the records of pks starting with this (empty: all).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pk_prefix: String,
}

/// The answer to a [`ScanQuery`].
#[derive(Debug, Deserialize)]
pub struct ScanReply {
    /// With their pks and sks.
    pub records: Vec<WireRecord>,
    /// Where to continue within the partition; `None` when the page walked to its end.
    pub next_cursor: Option<String>,
    /// The partition's watch token on the answering node, taken before it read.
    #[serde(default)]
    pub token: Option<String>,
    /// The reads the page took.
    pub reads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_crosses_to_a_peer_as_it_is_stored() {
        // The asking node hashes what it gets into a `WATCH` version: every part of the
        // stored value must arrive, a field's own deadline included.
        let plain = Record {
            pk: "p".into(),
            sk: "f\"1".into(),
            data_json: r#"{"a":[1,2.50]}"#.into(),
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: None,
            own_deadline: false,
        };
        let keys = Record {
            expires_at_ms: Some(9_000),
            ..plain.clone()
        };
        let own = Record {
            own_deadline: true,
            ..keys.clone()
        };
        for record in [plain, keys, own] {
            let mut out = Vec::new();
            render_record(&mut out, &record, true);
            let wire: WireRecord = serde_json::from_slice(&out).unwrap();
            let sk = wire.sk.clone().unwrap();
            assert_eq!(wire.into_record("p".into(), sk), record);
        }
    }

    #[test]
    fn a_list_answer_says_how_far_its_owner_had_applied_and_older_owners_parse_without_it() {
        let from_older: ListReply =
            serde_json::from_str(r#"{"records":[],"next_cursor":null,"token":"1:5"}"#).unwrap();
        assert_eq!(from_older.read_through, None);
        let current: ListReply = serde_json::from_str(
            r#"{"records":[],"next_cursor":null,"token":"1:5","read_through":9}"#,
        )
        .unwrap();
        assert_eq!(current.read_through, Some(9));
    }
}
