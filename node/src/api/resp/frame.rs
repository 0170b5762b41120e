//! Reading commands off the wire: RESP arrays of bulk strings (what every client sends, under RESP2
//! and RESP3 alike) and inline commands (`PING\r\n`, as typed into telnet), within size limits.

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

/// Why the bytes a client sent cannot be a command. The connection answers the error and closes,
/// as Redis does for protocol errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("Protocol error: {0}")]
    Protocol(String),
    #[error("Protocol error: {what} of {size} is over the limit of {limit}{}", setting(.what))]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// A command with an argument over `max_bulk` (but within what Redis accepts at all): its
    /// bytes were read past and dropped, and the connection goes on with the next command.
    #[error(
        "an argument of {size} bytes is over the limit of {limit} bytes (MAX_BODY_BYTES): the \
         command was not run"
    )]
    Skipped { size: u64, limit: u64 },
}

impl FrameError {
    /// Whether the connection must close: the bytes that follow cannot be read as commands.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::Skipped { .. })
    }
}

/// The longest argument a client may declare at all (Redis's `proto-max-bulk-len`): one over
/// the node's own limit but within this is read past, so its client gets an error it can read
/// (a client still sending it would see only a closed connection); one over this closes the
/// connection at its header.
const SKIPPABLE_BULK: u64 = 512 << 20;

/// What bounds a [`FrameError::TooLarge`] size, for its message: the setting to raise.
fn setting(what: &str) -> &'static str {
    match what {
        "a command" => " bytes (MAX_BODY_BYTES)",
        "an argument" => " bytes (the most Redis takes: proto-max-bulk-len)",
        "an argument count" => "",
        _ => " bytes",
    }
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

/// Takes commands off one connection's bytes, within its limits. It remembers how far it got
/// through a command that has not fully arrived, so each read walks only the headers that are
/// new: a client trickling a 2,000-argument command a byte at a time costs one walk of it, not
/// one per byte.
#[derive(Debug)]
pub struct CommandReader {
    limits: FrameLimits,
    resume: Resume,
    /// Dropping the rest of a command with an argument over `max_bulk`.
    skipping: Option<Skipping>,
}

/// What is left to drop of a command being skipped: bytes of the argument (and its CRLF) being
/// dropped, then whole arguments after it.
#[derive(Debug, Clone, Copy)]
struct Skipping {
    bytes: u64,
    args: i64,
    /// The oversized argument's length, for the error.
    size: u64,
}

/// Where the walk of a command that has not fully arrived stopped: `done` of its `count`
/// arguments are whole, and the next one's header starts at `at` (0: start from the beginning).
/// `general`: an argument so far was an integer or a simple string, which the general decoder
/// takes once the command is whole.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Resume {
    count: i64,
    done: i64,
    at: usize,
    general: bool,
}

/// Longest simple-string argument line (clients send bulk strings; this is a courtesy to
/// hand-made commands). Bounded because an unfinished line is scanned again on each read.
const MAX_SIMPLE_LINE: usize = 64 * 1024;

impl CommandReader {
    pub fn new(limits: FrameLimits) -> Self {
        CommandReader {
            limits,
            resume: Resume::default(),
            skipping: None,
        }
    }

    /// Takes the next complete command out of `buf`: `Ok(None)` until one has fully arrived.
    /// `buf` only grows at its end between calls, and only this takes from it.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, FrameError> {
        loop {
            if self.skipping.is_some() {
                return self.skip(buf);
            }
            let limits = &self.limits;
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] != b'*' {
                return inline_command(buf, limits);
            }
            let layout = bulk_array_layout(buf, limits, &mut self.resume);
            if !matches!(layout, Ok(Layout::Partial)) {
                self.resume = Resume::default();
            }
            return match layout? {
                Layout::Complete { args, end } => Ok(Some(split_bulk_array(buf, args, end))),
                // Not a command, and no reply: Redis reads past `*0`, `*-1` and `*-5` alike.
                // A loop, not a call: a buffer of a million of them is a million turns.
                Layout::Empty { end } => {
                    buf.advance(end);
                    continue;
                }
                Layout::Oversized {
                    data_at,
                    size,
                    args_after,
                } => {
                    buf.advance(data_at);
                    self.skipping = Some(Skipping {
                        bytes: size + 2,
                        args: args_after,
                        size,
                    });
                    self.skip(buf)
                }
                Layout::Partial if buf.len() > limits.max_buffered => Err(FrameError::TooLarge {
                    what: "a command",
                    size: buf.len() as u64,
                    limit: limits.max_buffered as u64,
                }),
                Layout::Partial => Ok(None),
                Layout::Other => decode_general(buf, limits),
            };
        }
    }

    /// Drops what has arrived of the command being skipped: `Ok(None)` until all of it has,
    /// then the [`FrameError::Skipped`] that answers it. Nothing of it is kept, so a skipped
    /// command costs no memory however long it is.
    #[cold]
    fn skip(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, FrameError> {
        let result = self.skip_some(buf);
        if !matches!(result, Ok(None)) {
            self.skipping = None;
        }
        result
    }

    fn skip_some(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, FrameError> {
        let skipping = self.skipping.as_mut().expect("a command is being skipped");
        loop {
            let dropped = usize::try_from(skipping.bytes)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            buf.advance(dropped);
            skipping.bytes -= dropped as u64;
            if skipping.bytes > 0 {
                return Ok(None);
            }
            if skipping.args == 0 {
                return Err(FrameError::Skipped {
                    size: skipping.size,
                    limit: self.limits.max_bulk,
                });
            }
            // The next argument's header: a bulk string, as the walk requires.
            match buf.first() {
                None => return Ok(None),
                Some(b'$') => {}
                Some(&other) => {
                    return Err(FrameError::Protocol(format!(
                        "expected '$', got '{}'",
                        other.escape_ascii()
                    )));
                }
            }
            let Some((len, data_at)) = read_number(buf, 1)? else {
                return Ok(None);
            };
            if !line_ends(buf, data_at)? {
                return Ok(None);
            }
            if len < 0 {
                return Err(FrameError::Protocol("invalid bulk length".into()));
            }
            within("an argument", len, SKIPPABLE_BULK)?;
            buf.advance(data_at);
            skipping.bytes = len as u64 + 2;
            skipping.args -= 1;
        }
    }
}

/// What the headers of the array at the start of a buffer say.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// An array of `args` bulk strings, all arrived and well formed, ending at `end`.
    Complete { args: usize, end: usize },
    /// An array of no arguments (`*0`) or a negative count (`*-1`, a null array): its header
    /// ends at `end`, and nothing else is part of it.
    Empty { end: usize },
    /// Well formed so far; more has to arrive.
    Partial,
    /// An argument over `max_bulk` whose data starts at `data_at`, with `args_after` more
    /// arguments after it: the command is read past, not run.
    Oversized {
        data_at: usize,
        size: u64,
        args_after: i64,
    },
    /// A whole, flat array with integers or simple strings among its arguments: the general
    /// decoder takes it (see [`bulk_array_layout`]).
    Other,
}

/// Walks `*<n>` and the `$<len>` headers of the array at the start of `buf`, refusing absurd
/// sizes before any of their data is buffered: a client cannot make the node reserve or wait for
/// gigabytes. Every client sends commands as arrays of bulk strings, so this walk also finds
/// where such a command ends, and [`split_bulk_array`] slices it out without a second parser
/// (the general decoder's frames cost a pipelined `GET` a tenth of its CPU). It starts where
/// `resume` says the last walk of this command stopped, and notes where it stops when the
/// command has not fully arrived.
///
/// The general decoder recurses once per nested array (`*1\r\n*1\r\n...`: a few hundred
/// kilobytes of them overflowed a worker thread's stack and aborted the node), so it only ever
/// gets what this walk has checked to be flat: an array whose arguments are bulk strings,
/// integers and simple strings, each whole and well formed (it turns the last two into
/// arguments). Anything else in an array is refused here, as Redis refuses it.
fn bulk_array_layout(
    buf: &[u8],
    limits: &FrameLimits,
    resume: &mut Resume,
) -> Result<Layout, FrameError> {
    let Resume {
        count,
        mut done,
        mut at,
        mut general,
    } = if resume.at > 0 {
        *resume
    } else {
        let Some((count, at)) = read_number(buf, 1)? else {
            return Ok(Layout::Partial);
        };
        within("an argument count", count, limits.max_args)?;
        if !line_ends(buf, at)? {
            return Ok(Layout::Partial);
        }
        if count <= 0 {
            return Ok(Layout::Empty { end: at });
        }
        Resume {
            count,
            done: 0,
            at,
            general: false,
        }
    };
    let mut partial = |done, at, general| {
        *resume = Resume {
            count,
            done,
            at,
            general,
        };
        Ok(Layout::Partial)
    };
    while done < count {
        match buf.get(at) {
            None => return partial(done, at, general),
            Some(b'$') => {}
            Some(b':') => {
                let Some((_, next)) = read_number(buf, at + 1)? else {
                    return partial(done, at, general);
                };
                if !line_ends(buf, next)? {
                    return partial(done, at, general);
                }
                (at, done, general) = (next, done + 1, true);
                continue;
            }
            Some(b'+') => {
                let line = &buf[at..buf.len().min(at + MAX_SIMPLE_LINE + 2)];
                let Some(cr) = line.iter().position(|&b| b == b'\r') else {
                    if line.len() > MAX_SIMPLE_LINE {
                        return Err(FrameError::TooLarge {
                            what: "a simple-string argument",
                            size: line.len() as u64,
                            limit: MAX_SIMPLE_LINE as u64,
                        });
                    }
                    return partial(done, at, general);
                };
                let next = at + cr + 2;
                if !line_ends(buf, next)? {
                    return partial(done, at, general);
                }
                (at, done, general) = (next, done + 1, true);
                continue;
            }
            Some(&other) => {
                return Err(FrameError::Protocol(format!(
                    "expected '$', got '{}'",
                    other.escape_ascii()
                )));
            }
        }
        let Some((len, data_at)) = read_number(buf, at + 1)? else {
            return partial(done, at, general);
        };
        if len > limits.max_bulk as i64 {
            // Read past (and answered) if Redis would take it at all, else the connection closes.
            within("an argument", len, SKIPPABLE_BULK.max(limits.max_bulk))?;
            if !line_ends(buf, data_at)? {
                return partial(done, at, general);
            }
            return Ok(Layout::Oversized {
                data_at,
                size: len as u64,
                args_after: count - done - 1,
            });
        }
        if !line_ends(buf, data_at)? {
            return partial(done, at, general);
        }
        if len < 0 {
            return Err(FrameError::Protocol("invalid bulk length".into()));
        }
        let data_end = data_at + len as usize;
        if buf.len() < data_end + 2 {
            return partial(done, at, general);
        }
        // What follows the data is not checked, as in Redis (and the general decoder).
        at = data_end + 2;
        done += 1;
    }
    if general {
        return Ok(Layout::Other);
    }
    Ok(Layout::Complete {
        args: count as usize,
        end: at,
    })
}

/// Whether the line that ended with a CR at `next - 2` (`read_number`'s, or a simple
/// string's) ends in CRLF: `Ok(false)` while its LF has not arrived, an error if something else
/// follows the CR.
fn line_ends(buf: &[u8], next: usize) -> Result<bool, FrameError> {
    match buf.get(next - 1) {
        None => Ok(false),
        Some(b'\n') => Ok(true),
        Some(_) => Err(FrameError::Protocol(
            "expected CRLF at the end of a line".into(),
        )),
    }
}

/// A declared size (`what`) within its limit, else the error that names both.
fn within(what: &'static str, size: i64, limit: u64) -> Result<(), FrameError> {
    if size > limit as i64 {
        return Err(FrameError::TooLarge {
            what,
            size: size as u64,
            limit,
        });
    }
    Ok(())
}

/// Takes the array [`bulk_array_layout`] found complete out of `buf`: its arguments are slices of
/// the bytes that arrived, not copies. Inlined into the reader, as it was before the reader
/// could skip a command (a call of its own cost a pipelined `GET` ~1 % of its instructions).
#[inline(always)]
fn split_bulk_array(buf: &mut BytesMut, args: usize, end: usize) -> Vec<Bytes> {
    let frame = buf.split_to(end).freeze();
    let mut out = Vec::with_capacity(args);
    // The walk validated every header: skip `*<n>\r\n`, then `$<len>\r\n<data>\r\n` each.
    let mut at = frame.iter().position(|&b| b == b'\n').expect("validated") + 1;
    for _ in 0..args {
        let mut len = 0usize;
        at += 1;
        while frame[at] != b'\r' {
            len = len * 10 + usize::from(frame[at] - b'0');
            at += 1;
        }
        at += 2;
        out.push(frame.slice(at..at + len));
        at += len + 2;
    }
    out
}

/// Any other frame that starts with `*`, by the general decoder: arrays with integers in them
/// (taken as their text), and clear errors for everything that is not a command.
fn decode_general(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, FrameError> {
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

/// Parses a decimal number (digits, perhaps after a `-`) starting at `at` and ending in CR:
/// (number, index after the CRLF). Anything else in a length is an error, as in Redis.
fn read_number(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, FrameError> {
    // What clients send (a few digits, then CR) in one pass: a pipelined `GET` reads three
    // numbers, and finding the CR first and then parsing was ~6 % of its instructions. Up to 18
    // digits cannot overflow an `i64`; anything else takes the checked path below, which gives
    // the same answer for these inputs.
    if let Some(rest) = buf.get(at..) {
        let mut n: i64 = 0;
        for (i, &b) in rest.iter().enumerate().take(19) {
            match b {
                b'0'..=b'9' if i < 18 => n = n * 10 + i64::from(b - b'0'),
                b'\r' if i > 0 => return Ok(Some((n, at + i + 2))),
                _ => break,
            }
        }
    }
    read_number_checked(buf, at)
}

/// [`read_number`] for any input: negative numbers, numbers that have not fully arrived, and
/// malformed or oversized lengths (refused with the text that was sent).
fn read_number_checked(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, FrameError> {
    let Some(rest) = buf.get(at..) else {
        return Ok(None);
    };
    let Some(end) = rest.iter().take(21).position(|&b| b == b'\r') else {
        if rest.len() > 20 {
            return Err(FrameError::Protocol("invalid length".into()));
        }
        return Ok(None);
    };
    let text = &rest[..end];
    let invalid = || {
        FrameError::Protocol(format!(
            "invalid length {:?}",
            String::from_utf8_lossy(text)
        ))
    };
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    // `-0` is not a length to Redis either (`string2ll`).
    if digits.is_empty() || (negative && digits.iter().all(|&d| d == b'0')) {
        return Err(invalid());
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(invalid());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(invalid)?;
    }
    Ok(Some((if negative { -n } else { n }, at + end + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass path answers exactly as the checked parser does, for every kind of length a
    /// client (or an attacker) may send, complete or not.
    #[test]
    fn read_number_fast_path_agrees_with_the_checked_parser() {
        let mut inputs: Vec<Vec<u8>> = [
            "0\r\n",
            "7\r\n",
            "16\r\n",
            "-1\r\n",
            "\r\n",
            "-\r\n",
            "12",
            "",
            "1a\r\n",
            " 1\r\n",
            "+1\r\n",
            "99999999999999999\r\n",
            "999999999999999999\r\n",
            "9223372036854775807\r\n",
            "9223372036854775808\r\n",
            "1234567890123456789012\r\n",
            "123456789012345678901",
            "00000000000000000001\r\n",
            "5\n",
            "5\r",
            "--5\r\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for digits in 1..=22 {
            inputs.push(format!("{}\r\n", "9".repeat(digits)).into_bytes());
            inputs.push("9".repeat(digits).into_bytes());
        }
        for input in inputs {
            for at in 0..2 {
                let mut buf = b"$".repeat(at);
                buf.extend_from_slice(&input);
                let fast = read_number(&buf, at).map_err(|e| e.to_string());
                let checked = read_number_checked(&buf, at).map_err(|e| e.to_string());
                assert_eq!(fast, checked, "{:?}", String::from_utf8_lossy(&input));
            }
        }
    }

    /// One command out of `buf` by a reader that has seen nothing of it before.
    fn next_command(
        buf: &mut BytesMut,
        limits: &FrameLimits,
    ) -> Result<Option<Vec<Bytes>>, FrameError> {
        CommandReader::new(*limits).next(buf)
    }

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
        let mut reader = CommandReader::new(LIMITS);
        let mut buf = BytesMut::from(
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\nPING inline\r\n*1\r\n$4\r\nPI"[..],
        );
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"GET".as_slice(), b"k"]
        );
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"PING".as_slice()]
        );
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"PING".as_slice(), b"inline"]
        );
        assert_eq!(reader.next(&mut buf).unwrap(), None, "incomplete");
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"PING".as_slice()]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_and_negative_arrays_are_read_past_without_a_reply_as_redis_does() {
        let mut reader = CommandReader::new(LIMITS);
        // A million of them in one buffer: read past in a loop, never a call per array.
        let mut wire = b"*0\r\n*-1\r\n*-5\r\n".repeat(1 << 20);
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n*0\r\n");
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"PING".as_slice()]
        );
        assert_eq!(reader.next(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        // `-0` is no length to Redis (`string2ll`): refused, as a `*+1` is.
        for bad in [&b"*-0\r\nPING\r\n"[..], b"*+1\r\n$4\r\nPING\r\n"] {
            let mut buf = BytesMut::from(bad);
            let error = CommandReader::new(LIMITS).next(&mut buf).unwrap_err();
            assert!(error.to_string().contains("invalid length"), "{error}");
        }
    }

    #[test]
    fn a_command_in_pieces_is_walked_once() {
        let mut reader = CommandReader::new(LIMITS);
        let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n";
        let mut buf = BytesMut::from(&head[..]);
        assert_eq!(reader.next(&mut buf), Ok(None));
        // The next walk starts at the third argument's header, not at the first.
        assert_eq!(
            reader.resume,
            Resume {
                count: 3,
                done: 2,
                at: head.len(),
                general: false,
            }
        );
        buf.extend_from_slice(b"$2\r\nv");
        assert_eq!(reader.next(&mut buf), Ok(None));
        assert_eq!(
            reader.resume.done, 2,
            "the third argument's data is not all here"
        );
        buf.extend_from_slice(b"1\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"SET".as_slice(), b"k", b"v1"]
        );
        assert_eq!(reader.resume, Resume::default(), "forgotten once taken out");
        assert_eq!(
            args(&reader.next(&mut buf).unwrap().unwrap()),
            vec![b"PING".as_slice()]
        );
    }

    /// Feeds `bytes` to `reader` `chunk` bytes at a time, collecting what each call answers.
    fn feed(
        reader: &mut CommandReader,
        bytes: &[u8],
        chunk: usize,
    ) -> Vec<Result<Vec<Vec<u8>>, FrameError>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match reader.next(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(cmd)) => out.push(Ok(cmd.iter().map(|a| a.to_vec()).collect())),
                    Err(e) => {
                        let fatal = e.is_fatal();
                        out.push(Err(e));
                        if fatal {
                            return out;
                        }
                    }
                }
            }
            // Nothing of a skipped argument is kept while it streams past.
            assert!(
                buf.len() <= LIMITS.max_buffered + chunk,
                "{} buffered",
                buf.len()
            );
        }
        out
    }

    #[test]
    fn an_argument_over_the_limit_is_read_past_and_answered_whatever_the_chunks() {
        let big = 10 * LIMITS.max_bulk as usize;
        let mut bytes = b"*2\r\n$4\r\nPING\r\n$1\r\na\r\n".to_vec();
        // An oversized argument in the middle, more arguments after it (one oversized too).
        bytes.extend_from_slice(format!("*4\r\n$3\r\nSET\r\n${big}\r\n").as_bytes());
        bytes.extend(std::iter::repeat_n(b'x', big));
        bytes.extend_from_slice(format!("\r\n$1\r\nv\r\n${big}\r\n").as_bytes());
        bytes.extend(std::iter::repeat_n(b'y', big));
        bytes.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        for chunk in [1, 3, 7, 100, 1000, bytes.len()] {
            let out = feed(&mut CommandReader::new(LIMITS), &bytes, chunk);
            assert_eq!(out.len(), 3, "chunk {chunk}: {out:?}");
            assert_eq!(out[0], Ok(vec![b"PING".to_vec(), b"a".to_vec()]));
            assert_eq!(
                out[1],
                Err(FrameError::Skipped {
                    size: big as u64,
                    limit: LIMITS.max_bulk
                })
            );
            assert_eq!(out[2], Ok(vec![b"PING".to_vec()]), "chunk {chunk}");
        }
        let message = FrameError::Skipped { size: 9, limit: 8 }.to_string();
        assert!(message.contains("MAX_BODY_BYTES") && message.contains("not run"));
    }

    #[test]
    fn a_skipped_command_that_goes_wrong_still_closes_the_connection() {
        let big = 2 * LIMITS.max_bulk as usize;
        let over = |rest: &[u8]| {
            let mut bytes = format!("*2\r\n${big}\r\n").into_bytes();
            bytes.extend(std::iter::repeat_n(b'x', big));
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(rest);
            let out = feed(&mut CommandReader::new(LIMITS), &bytes, 64);
            out.last().cloned().unwrap()
        };
        // What follows is not a bulk string, or declares more than Redis takes at all.
        assert!(matches!(over(b":5\r\n"), Err(FrameError::Protocol(_))));
        assert!(matches!(
            over(b"$99999999999\r\n"),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(over(b"$-3\r\n"), Err(FrameError::Protocol(_))));
    }

    #[test]
    fn huge_declared_sizes_fail_at_once() {
        let mut buf = BytesMut::from(&b"*1\r\n$99999999999\r\n"[..]);
        let too_long = next_command(&mut buf, &LIMITS).unwrap_err();
        assert!(matches!(too_long, FrameError::TooLarge { .. }));
        // The message says what bounds it.
        assert!(
            too_long.to_string().ends_with("proto-max-bulk-len)"),
            "{too_long}"
        );
        // Arguments each within their limit, more of them buffered than one command may hold.
        let mut buf = BytesMut::from(&b"*6\r\n"[..]);
        for _ in 0..5 {
            buf.extend_from_slice(b"$1000\r\n");
            buf.extend(std::iter::repeat_n(b'x', 1000));
            buf.extend_from_slice(b"\r\n");
        }
        let buffered = next_command(&mut buf, &LIMITS).unwrap_err();
        assert!(
            buffered.to_string().ends_with("bytes (MAX_BODY_BYTES)"),
            "{buffered}"
        );
        let mut buf = BytesMut::from(&b"*100000\r\n"[..]);
        let too_many = next_command(&mut buf, &LIMITS).unwrap_err();
        assert!(matches!(too_many, FrameError::TooLarge { .. }));
        assert!(!too_many.to_string().contains("bytes"), "{too_many}");
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

    #[test]
    fn nested_arrays_are_refused_without_recursing_into_them() {
        // Deep enough to overflow a thread's stack in a recursive decoder; the reader must
        // answer at the first nested header, whole or in pieces, after integers too.
        for (count, prefix) in [(1, &b""[..]), (3, b":1\r\n+x\r\n")] {
            let mut wire = format!("*{count}\r\n").into_bytes();
            wire.extend_from_slice(prefix);
            wire.extend(b"*1\r\n".repeat(1_000_000));
            let mut buf = BytesMut::from(&wire[..]);
            let limits = FrameLimits {
                max_buffered: 8 << 20,
                ..LIMITS
            };
            assert_eq!(
                next_command(&mut buf, &limits),
                Err(FrameError::Protocol("expected '$', got '*'".into()))
            );
        }
        let mut reader = CommandReader::new(LIMITS);
        let mut buf = BytesMut::from(&b"*2\r\n:1"[..]);
        assert_eq!(
            reader.next(&mut buf),
            Ok(None),
            "an integer line still arriving"
        );
        buf.extend_from_slice(b"2\r\n*1\r\n");
        assert!(matches!(
            reader.next(&mut buf),
            Err(FrameError::Protocol(_))
        ));
        // Integers and simple strings alone still go to the general decoder.
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nGET\r\n:12\r\n+ab\r\n"[..]);
        assert_eq!(
            args(&next_command(&mut buf, &LIMITS).unwrap().unwrap()),
            vec![b"GET".as_slice(), b"12", b"ab"]
        );
        // A simple-string line that never ends is refused once past its bound, an integer at
        // its 21st character.
        let limits = FrameLimits {
            max_buffered: 1 << 20,
            ..LIMITS
        };
        let mut buf = BytesMut::from(&b"*1\r\n+"[..]);
        buf.extend(std::iter::repeat_n(b'a', MAX_SIMPLE_LINE + 10));
        assert!(matches!(
            next_command(&mut buf, &limits),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"*1\r\n:"[..]);
        buf.extend(std::iter::repeat_n(b'1', 30));
        assert!(matches!(
            next_command(&mut buf, &limits),
            Err(FrameError::Protocol(_))
        ));
    }

    /// Bytes that look like RESP: headers, lengths, separators, and a little garbage.
    fn resp_like() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"*".to_vec()),
            Just(b"$".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"-".to_vec()),
            Just(b"+".to_vec()),
            Just(b":".to_vec()),
            (0u32..12).prop_map(|n| n.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..4),
            Just(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()),
        ];
        let tokens = proptest::collection::vec(token, 1..24).prop_map(|t| t.concat());
        // Commands as clients send them, with now and then a length that is off, a separator
        // that is not CRLF, or an element that is not a bulk string; cut anywhere.
        let separator = prop_oneof![
            6 => Just(b"\r\n".to_vec()),
            1 => Just(b"\r".to_vec()),
            1 => Just(b"\nx".to_vec()),
            1 => Just(b"ab".to_vec()),
        ];
        let element = (
            proptest::collection::vec(any::<u8>(), 0..6),
            prop_oneof![6 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)],
            prop_oneof![8 => Just(b"$".to_vec()), 1 => Just(b":".to_vec()), 1 => Just(b"+".to_vec())],
            separator.clone(),
            separator.clone(),
        )
            .prop_map(|(data, off, kind, after_len, after_data)| {
                let len = data.len() as i64 + off;
                [kind, len.to_string().into_bytes(), after_len, data, after_data].concat()
            });
        let commands = (
            proptest::collection::vec(element, 0..5),
            prop_oneof![6 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)],
            separator,
            any::<proptest::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(elements, off, after_count, cut, whole)| {
                let count = elements.len() as i64 + off;
                let wire = [
                    format!("*{count}").into_bytes(),
                    after_count,
                    elements.concat(),
                ]
                .concat();
                if whole {
                    wire
                } else {
                    wire[..cut.index(wire.len() + 1)].to_vec()
                }
            });
        prop_oneof![tokens, commands]
    }

    proptest! {
        /// Whatever arrives, in whatever pieces: an error, a command, or a wait — never a panic,
        /// and never more buffered than the limit allows.
        #[test]
        fn garbage_never_panics_or_grows_without_bound(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
            let mut reader = CommandReader::new(LIMITS);
            let mut buf = BytesMut::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match reader.next(&mut buf) {
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

        /// The one-pass path for arrays of bulk strings takes out exactly what the general
        /// decoder would, and leaves the same bytes behind; it only ever waits when that would.
        #[test]
        fn the_fast_path_agrees_with_the_decoder(input in resp_like()) {
            let mut fast = BytesMut::from(&input[..]);
            let mut general = fast.clone();
            let fast_result = next_command(&mut fast, &LIMITS);
            // Empty and negative arrays are read past (as Redis does); the general decoder
            // makes them an empty command or an error.
            let empty = matches!(read_number(&input, 1), Ok(Some((n, _))) if n <= 0);
            if input.first() == Some(&b'*') && !empty {
                let general_result = decode_general(&mut general, &LIMITS);
                match &fast_result {
                    Ok(Some(args)) => {
                        prop_assert_eq!(general_result, Ok(Some(args.clone())));
                        prop_assert_eq!(&fast, &general);
                    }
                    Ok(None) => prop_assert_eq!(general_result, Ok(None)),
                    Err(_) => {}
                }
            }
        }

        /// Commands arriving in any pieces come out as they do arriving whole: what a reader
        /// remembers of a command between reads never changes what it takes out.
        #[test]
        fn commands_in_pieces_come_out_as_whole(input in resp_like(), cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12)) {
            let mut whole_reader = CommandReader::new(LIMITS);
            let mut whole = BytesMut::from(&input[..]);
            let mut expected = Vec::new();
            loop {
                match whole_reader.next(&mut whole) {
                    Ok(Some(args)) => expected.push(Ok(args)),
                    Ok(None) => break,
                    Err(e) => { expected.push(Err(e)); break; }
                }
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut reader = CommandReader::new(LIMITS);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            'pieces: for cut in cuts {
                buf.extend_from_slice(&input[from..cut]);
                from = cut;
                loop {
                    match reader.next(&mut buf) {
                        Ok(Some(args)) => got.push(Ok(args)),
                        Ok(None) => break,
                        Err(e) => { got.push(Err(e)); break 'pieces; }
                    }
                }
            }
            prop_assert_eq!(got, expected);
        }
    }
}
