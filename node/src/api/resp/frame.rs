//! Reading commands off the wire: RESP arrays of bulk strings (what every client sends, under RESP2
//! and RESP3 alike) and inline commands (`PING\r\n`, as typed into telnet), within size limits.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

/// Why the bytes a client sent cannot be a command. The connection answers the error and closes,
/// as Redis does for protocol errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("Protocol error: {0}")]
    Protocol(String),
    #[error("Protocol error: {what} of {size} is over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

/// Limits on one command.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Bytes of one argument.
    pub max_bulk: u64,
    /// Arguments of one command.
    pub max_args: u64,
    /// Bytes buffered for one command that has not fully arrived.
    pub max_buffered: usize,
}

/// Takes the next complete command out of `buf`: `Ok(None)` until one has fully arrived.
pub fn next_command(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return inline_command(buf, limits);
    }
    check_declared_sizes(buf, limits)?;
    match decode_bytes_mut(buf) {
        Ok(None) => {
            if buf.len() > limits.max_buffered {
                return Err(FrameError::TooLarge {
                    what: "a command",
                    size: buf.len() as u64,
                    limit: limits.max_buffered as u64,
                });
            }
            Ok(None)
        }
        Ok(Some((frame, _, _))) => match frame {
            BytesFrame::Array(items) => {
                // Not `collect`: that reuses the frames' allocation and shrinks it (a realloc
                // per command).
                let mut args = Vec::with_capacity(items.len());
                for item in items {
                    args.push(match item {
                        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => b,
                        BytesFrame::Integer(i) => Bytes::from(i.to_string()),
                        other => {
                            return Err(FrameError::Protocol(format!(
                                "expected bulk strings in a command, got {:?}",
                                other.kind()
                            )));
                        }
                    });
                }
                Ok(Some(args))
            }
            other => Err(FrameError::Protocol(format!(
                "expected an array of bulk strings, got {:?}",
                other.kind()
            ))),
        },
        Err(e) => Err(FrameError::Protocol(e.details().to_string())),
    }
}

/// A command typed as one line of space-separated words.
fn inline_command(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, FrameError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_buffered.min(64 * 1024) {
            return Err(FrameError::TooLarge {
                what: "an inline command",
                size: buf.len() as u64,
                limit: limits.max_buffered.min(64 * 1024) as u64,
            });
        }
        return Ok(None);
    };
    let line = buf.split_to(end + 1).freeze();
    let text = line.slice(..end);
    let text = text.strip_suffix(b"\r").unwrap_or(&text);
    split_inline(text).map(Some)
}

/// Splits an inline command into words as Redis does (`sdssplitargs`): words are separated by
/// whitespace; `"double quotes"` take `\n \r \t \b \a \\ \"` and `\xHH` escapes; `'single quotes'`
/// take `\'`; a closing quote must be followed by whitespace or the end.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, FrameError> {
    let unbalanced = || FrameError::Protocol("unbalanced quotes in request".into());
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i..) {
                        None | Some([]) => return Err(unbalanced()),
                        Some([b'\\', b'x', h, l, ..])
                            if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() =>
                        {
                            let hex = [*h, *l];
                            let hex = std::str::from_utf8(&hex).expect("hex digits are ASCII");
                            word.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                            i += 4;
                        }
                        Some([b'\\', c, ..]) => {
                            word.push(match c {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => *other,
                            });
                            i += 2;
                        }
                        Some([b'"', rest @ ..]) => {
                            if rest.first().is_some_and(|b| !b.is_ascii_whitespace()) {
                                return Err(unbalanced());
                            }
                            i += 1;
                            break;
                        }
                        Some([c, ..]) => {
                            word.push(*c);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i..) {
                        None | Some([]) => return Err(unbalanced()),
                        Some([b'\\', b'\'', ..]) => {
                            word.push(b'\'');
                            i += 2;
                        }
                        Some([b'\'', rest @ ..]) => {
                            if rest.first().is_some_and(|b| !b.is_ascii_whitespace()) {
                                return Err(unbalanced());
                            }
                            i += 1;
                            break;
                        }
                        Some([c, ..]) => {
                            word.push(*c);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(Bytes::from(word));
    }
}

/// Reads `*<n>` and the `$<len>` headers that have arrived, refusing absurd sizes before any of
/// their data is buffered: a client cannot make the node reserve or wait for gigabytes.
fn check_declared_sizes(buf: &[u8], limits: &FrameLimits) -> Result<(), FrameError> {
    let Some((count, mut at)) = read_number(buf, 1)? else {
        return Ok(());
    };
    if count > limits.max_args as i64 {
        return Err(FrameError::TooLarge {
            what: "an argument count",
            size: count as u64,
            limit: limits.max_args,
        });
    }
    for _ in 0..count.max(0) {
        match buf.get(at) {
            None => return Ok(()),
            Some(b'$') => {}
            // Not a bulk string: the decoder reports it.
            Some(_) => return Ok(()),
        }
        let Some((len, data_at)) = read_number(buf, at + 1)? else {
            return Ok(());
        };
        if len > limits.max_bulk as i64 {
            return Err(FrameError::TooLarge {
                what: "an argument",
                size: len as u64,
                limit: limits.max_bulk,
            });
        }
        at = data_at + len.max(0) as usize + 2;
    }
    Ok(())
}

/// Parses a decimal number starting at `at` and ending in CRLF: (number, index after the CRLF).
fn read_number(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, FrameError> {
    let Some(rest) = buf.get(at..) else {
        return Ok(None);
    };
    let Some(end) = rest.iter().position(|&b| b == b'\r') else {
        if rest.len() > 20 {
            return Err(FrameError::Protocol("invalid length".into()));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&rest[..end])
        .map_err(|_| FrameError::Protocol("invalid length".into()))?;
    let n: i64 = text
        .parse()
        .map_err(|_| FrameError::Protocol(format!("invalid length {text:?}")))?;
    Ok(Some((n, at + end + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_commands_take_quotes_like_redis() {
        let words = |line: &str| {
            split_inline(line.as_bytes()).map(|w| w.iter().map(|w| w.to_vec()).collect::<Vec<_>>())
        };
        assert_eq!(
            words(r#"SET "my key" 'it\'s "quoted"'"#).unwrap(),
            vec![
                b"SET".to_vec(),
                b"my key".to_vec(),
                br#"it's "quoted""#.to_vec()
            ]
        );
        assert_eq!(
            words(r#"SET k "a\tb\x41\n""#).unwrap()[2],
            b"a\tbA\n".to_vec()
        );
        assert_eq!(words("  PING   ").unwrap(), vec![b"PING".to_vec()]);
        assert!(words(r#"SET k "open"#).is_err());
        assert!(words(r#"SET k "a"b"#).is_err());
        assert!(words("SET k 'open").is_err());
    }
    use proptest::prelude::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_bulk: 1024,
        max_args: 16,
        max_buffered: 4096,
    };

    fn args(cmd: &[Bytes]) -> Vec<&[u8]> {
        cmd.iter().map(|b| b.as_ref()).collect()
    }

    #[test]
    fn pipelined_commands_come_out_one_by_one() {
        let mut buf = BytesMut::from(
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\nPING inline\r\n*1\r\n$4\r\nPI"[..],
        );
        assert_eq!(
            args(&next_command(&mut buf, &LIMITS).unwrap().unwrap()),
            vec![b"GET".as_slice(), b"k"]
        );
        assert_eq!(
            args(&next_command(&mut buf, &LIMITS).unwrap().unwrap()),
            vec![b"PING".as_slice()]
        );
        assert_eq!(
            args(&next_command(&mut buf, &LIMITS).unwrap().unwrap()),
            vec![b"PING".as_slice(), b"inline"]
        );
        assert_eq!(next_command(&mut buf, &LIMITS).unwrap(), None, "incomplete");
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(
            args(&next_command(&mut buf, &LIMITS).unwrap().unwrap()),
            vec![b"PING".as_slice()]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn huge_declared_sizes_fail_at_once() {
        let mut buf = BytesMut::from(&b"*1\r\n$99999999999\r\n"[..]);
        assert!(matches!(
            next_command(&mut buf, &LIMITS),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"*100000\r\n"[..]);
        assert!(matches!(
            next_command(&mut buf, &LIMITS),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"*1\r\n$abc\r\n"[..]);
        assert!(matches!(
            next_command(&mut buf, &LIMITS),
            Err(FrameError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&b"*1\r\n:5\r\n"[..]);
        assert_eq!(
            args(&next_command(&mut buf, &LIMITS).unwrap().unwrap()),
            vec![b"5".as_slice()]
        );
        let mut buf = BytesMut::from(&b"*1\r\n*1\r\n$1\r\nx\r\n"[..]);
        assert!(matches!(
            next_command(&mut buf, &LIMITS),
            Err(FrameError::Protocol(_))
        ));
    }

    proptest! {
        /// Whatever arrives, in whatever pieces: an error, a command, or a wait — never a panic,
        /// and never more buffered than the limit allows.
        #[test]
        fn garbage_never_panics_or_grows_without_bound(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
            let mut buf = BytesMut::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match next_command(&mut buf, &LIMITS) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(_) => { buf.clear(); break; }
                    }
                }
                prop_assert!(buf.len() <= LIMITS.max_buffered + 300);
            }
        }

        #[test]
        fn any_arguments_round_trip(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..10)) {
            let mut wire = format!("*{}\r\n", parts.len()).into_bytes();
            for p in &parts {
                wire.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
                wire.extend_from_slice(p);
                wire.extend_from_slice(b"\r\n");
            }
            let mut buf = BytesMut::from(&wire[..]);
            let cmd = next_command(&mut buf, &LIMITS).unwrap().unwrap();
            prop_assert_eq!(cmd.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), parts);
        }
    }
}
