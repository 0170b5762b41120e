//! Replies, independent of the protocol version, and their RESP2/RESP3 encoding.

use bytes::{Bytes, BytesMut};
use redis_protocol::{resp2, resp3};

/// A reply to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+text`
    Simple(&'static str),
    /// `-text` (the text starts with the error code, e.g. `ERR ...`).
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// Text for people (`INFO`, `CLIENT LIST`): a verbatim string under RESP3 (`=…txt:`, as
    /// Redis sends it), a bulk string under RESP2.
    Verbatim(Bytes),
    Null,
    Array(Vec<Reply>),
    /// A map under RESP3; a flat key, value, ... array under RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set under RESP3 (`SMEMBERS`, `SINTER`: redis-py gives a Python set); an array under
    /// RESP2. Its elements are distinct.
    Set(Vec<Reply>),
    /// A RESP3 push (out-of-band: invalidations, pub/sub); an array under RESP2.
    Push(Vec<Reply>),
    /// Several frames in a row (`SUBSCRIBE a b` confirms each channel on its own).
    Frames(Vec<Reply>),
}

/// An error's message on one line, as Redis sends it (it replaces `\r` and `\n` by spaces): an
/// error is a simple string, which ends at the first line break, so a message that quotes a
/// client's argument (`unknown command 'a\nb'`) or a multi-line library message would end early
/// and the rest be read as the next reply.
fn one_line(message: String) -> String {
    if message.contains(['\r', '\n']) {
        message.replace(['\r', '\n'], " ")
    } else {
        message
    }
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK")
    }

    /// `-ERR message`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::Bulk(data.into())
    }

    /// Appends the reply's wire form for protocol version `proto` (2 or 3).
    pub fn encode(self, proto: u8, out: &mut BytesMut) {
        // The replies of nearly every command, written directly (the same bytes in RESP2 and
        // RESP3, but for nil): building a frame to encode cost more than the GET it answers.
        match self {
            Reply::Bulk(data) => {
                out.reserve(data.len() + 16);
                out.extend_from_slice(b"$");
                out.extend_from_slice(itoa::Buffer::new().format(data.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                return;
            }
            Reply::Int(n) => {
                out.extend_from_slice(b":");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
                return;
            }
            Reply::Null => {
                out.extend_from_slice(if proto >= 3 { b"_\r\n" } else { b"$-1\r\n" });
                return;
            }
            Reply::Frames(frames) => {
                for frame in frames {
                    frame.encode(proto, out);
                }
                return;
            }
            _ => {}
        }
        let result = if proto >= 3 {
            resp3::encode::complete::extend_encode(out, &self.into_resp3(), false)
        } else {
            resp2::encode::extend_encode(out, &self.into_resp2(), false)
        };
        result.expect("replies are always encodable");
    }

    fn into_resp2(self) -> resp2::types::BytesFrame {
        use resp2::types::BytesFrame as F;
        match self {
            Reply::Simple(s) => F::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(e) => F::Error(one_line(e).into()),
            Reply::Int(i) => F::Integer(i),
            Reply::Bulk(b) | Reply::Verbatim(b) => F::BulkString(b),
            Reply::Null => F::Null,
            Reply::Array(items) | Reply::Push(items) | Reply::Frames(items) | Reply::Set(items) => {
                F::Array(items.into_iter().map(Reply::into_resp2).collect())
            }
            Reply::Map(pairs) => F::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.into_resp2(), v.into_resp2()])
                    .collect(),
            ),
        }
    }

    fn into_resp3(self) -> resp3::types::BytesFrame {
        use resp3::types::BytesFrame as F;
        match self {
            Reply::Simple(s) => F::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes: None,
            },
            Reply::Error(e) => F::SimpleError {
                data: one_line(e).into(),
                attributes: None,
            },
            Reply::Int(i) => F::Number {
                data: i,
                attributes: None,
            },
            Reply::Bulk(b) => F::BlobString {
                data: b,
                attributes: None,
            },
            Reply::Verbatim(b) => F::VerbatimString {
                data: b,
                format: resp3::types::VerbatimStringFormat::Text,
                attributes: None,
            },
            Reply::Null => F::Null,
            Reply::Array(items) | Reply::Frames(items) => F::Array {
                data: items.into_iter().map(Reply::into_resp3).collect(),
                attributes: None,
            },
            Reply::Push(items) => F::Push {
                data: items.into_iter().map(Reply::into_resp3).collect(),
                attributes: None,
            },
            Reply::Set(items) => F::Set {
                data: items.into_iter().map(Reply::into_resp3).collect(),
                attributes: None,
            },
            Reply::Map(pairs) => F::Map {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_resp3(), v.into_resp3()))
                    .collect(),
                attributes: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: Reply, proto: u8) -> String {
        let mut out = BytesMut::new();
        reply.encode(proto, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn maps_are_flat_arrays_under_resp2() {
        let map = Reply::Map(vec![(Reply::bulk("f"), Reply::bulk("v"))]);
        assert_eq!(wire(map.clone(), 2), "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
        assert_eq!(wire(map, 3), "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
        assert_eq!(wire(Reply::Null, 2), "$-1\r\n");
        assert_eq!(wire(Reply::Null, 3), "_\r\n");
        assert_eq!(wire(Reply::err("boom"), 2), "-ERR boom\r\n");
        assert_eq!(wire(Reply::Int(-3), 3), ":-3\r\n");
    }

    #[test]
    fn an_error_is_one_line_whatever_its_message_holds() {
        let reply = || Reply::err("unknown command 'a\r\nb', regex:\n  (\n  ^");
        for proto in [2, 3] {
            assert_eq!(
                wire(reply(), proto),
                "-ERR unknown command 'a  b', regex:   (   ^\r\n"
            );
        }
        let nested = Reply::Array(vec![Reply::err("x\ny"), Reply::Int(1)]);
        assert_eq!(wire(nested, 2), "*2\r\n-ERR x y\r\n:1\r\n");
    }

    #[test]
    fn the_direct_encodings_are_what_redis_protocol_writes() {
        let values = [
            Bytes::new(),
            Bytes::from_static(b"v"),
            Bytes::from_static(b"\r\n\x00\xff binary"),
            Bytes::from(vec![b'x'; 70_000]),
        ];
        for proto in [2, 3] {
            for value in &values {
                let mut library = BytesMut::new();
                match proto {
                    2 => resp2::encode::extend_encode(
                        &mut library,
                        &resp2::types::BytesFrame::BulkString(value.clone()),
                        false,
                    ),
                    _ => resp3::encode::complete::extend_encode(
                        &mut library,
                        &resp3::types::BytesFrame::BlobString {
                            data: value.clone(),
                            attributes: None,
                        },
                        false,
                    ),
                }
                .unwrap();
                let mut ours = BytesMut::new();
                Reply::Bulk(value.clone()).encode(proto, &mut ours);
                assert_eq!(ours, library, "bulk of {} bytes, RESP{proto}", value.len());
            }
            for n in [0, 7, -1, 1_234_567, i64::MIN, i64::MAX] {
                let mut library = BytesMut::new();
                match proto {
                    2 => resp2::encode::extend_encode(
                        &mut library,
                        &resp2::types::BytesFrame::Integer(n),
                        false,
                    ),
                    _ => resp3::encode::complete::extend_encode(
                        &mut library,
                        &resp3::types::BytesFrame::Number {
                            data: n,
                            attributes: None,
                        },
                        false,
                    ),
                }
                .unwrap();
                assert_eq!(wire(Reply::Int(n), proto).as_bytes(), &library[..], "{n}");
            }
            let mut library = BytesMut::new();
            match proto {
                2 => resp2::encode::extend_encode(
                    &mut library,
                    &resp2::types::BytesFrame::Null,
                    false,
                ),
                _ => resp3::encode::complete::extend_encode(
                    &mut library,
                    &resp3::types::BytesFrame::Null,
                    false,
                ),
            }
            .unwrap();
            assert_eq!(
                wire(Reply::Null, proto).as_bytes(),
                &library[..],
                "nil, RESP{proto}"
            );
        }
    }
}
