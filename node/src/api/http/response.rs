//! Response bodies, written by hand so stored data bytes go to the wire without re-serializing.
//! Shapes are FireScroll's: `{"Records":[{"Pk","Sk","Data","CreatedAt","UpdatedAt"}]}`.

use crate::model::{Position, Record};
use crate::service::{EntryResult, ErrorKind, ServiceError};
use crate::service::{Outcome, Rejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use std::cell::Cell;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// A JSON response.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response {
    // Built directly: `Vec<u8>`'s `IntoResponse` would set a content type only to have it
    // replaced.
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

/// A plain-text response (`/up`, `/ready`), as FireScroll answered them.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// The last time RFC 3339 (four-digit years) can say: 9999-12-31T23:59:59.999Z.
pub const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// A time as RFC 3339 UTC with milliseconds, quoted (`"2023-05-07T14:03:11.123Z"`); a time before
/// 1970 or past 9999 as its unix milliseconds, a JSON number. Those come only from a producer's
/// odd `ts_ms` or a deadline set centuries ahead (Redis `PEXPIREAT`), and the formatter panicked
/// on them: every read of such a record dropped its connection.
///
/// The text up to the second is kept per thread and reused while times fall in the same second
/// (records written together share it, and a record's two times are often equal): through
/// `fmt`, each time cost ~650 instructions, ~1.3k of a one-record get, 1.3M for a list of 1,000.
pub(super) fn write_time(out: &mut Vec<u8>, ms: i64) {
    thread_local! {
        /// The last second formatted, and its text (`2023-05-07T14:03:11`).
        static LAST_SECOND: Cell<(i64, [u8; 19])> = const { Cell::new((-1, [0; 19])) };
    }
    if !(0..=LAST_RFC3339_MS).contains(&ms) {
        write!(out, "{ms}").expect("Vec write");
        return;
    }
    let second = ms / 1000;
    let prefix = LAST_SECOND.with(|last| {
        let (cached, text) = last.get();
        if cached == second {
            return text;
        }
        let full =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second as u64))
                .to_string();
        let mut text = [0u8; 19];
        text.copy_from_slice(&full.as_bytes()[..19]);
        last.set((second, text));
        text
    });
    let milli = (ms % 1000) as u16;
    out.push(b'"');
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&[
        b'.',
        b'0' + (milli / 100) as u8,
        b'0' + (milli / 10 % 10) as u8,
        b'0' + (milli % 10) as u8,
        b'Z',
        b'"',
    ]);
}

/// A record's fields, `"Pk":..,"Sk":..,"Data":..,"CreatedAt":..,"UpdatedAt":..` (and
/// `"ExpiresAt"` when it has a deadline, and `"OwnTtl":true` when that is its own), without the
/// braces.
pub fn write_record_fields(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(b"\"Pk\":");
    write_str(out, &r.pk);
    out.extend_from_slice(b",\"Sk\":");
    write_str(out, &r.sk);
    out.extend_from_slice(b",\"Data\":");
    out.extend_from_slice(r.data_json.as_bytes());
    out.extend_from_slice(b",\"CreatedAt\":");
    write_time(out, r.created_at_ms);
    out.extend_from_slice(b",\"UpdatedAt\":");
    write_time(out, r.updated_at_ms);
    // Only records with a deadline carry it, so FireScroll's shape is unchanged otherwise.
    if let Some(deadline) = r.expires_at_ms {
        out.extend_from_slice(b",\"ExpiresAt\":");
        write_time(out, deadline);
        if r.own_deadline {
            out.extend_from_slice(b",\"OwnTtl\":true");
        }
    }
}

/// `{"Records":[...]}` plus `"NextCursor"` when a list page has more after it.
pub fn records(records: &[Record], next_cursor: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + records
            .iter()
            .map(|r| r.data_json.len() + 128)
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"Records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        write_record_fields(&mut out, r);
        out.push(b'}');
    }
    out.push(b']');
    if let Some(cursor) = next_cursor {
        out.extend_from_slice(b",\"NextCursor\":");
        write_str(&mut out, cursor);
    }
    out.push(b'}');
    out
}

/// An entry's outcome as JSON: `Status` (applied, rejected, pending), then the rejection's
/// details, or what the applied entry's ops returned (`json` edits' replies).
#[derive(Serialize)]
struct OutcomeBody<'a> {
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    rejection: Option<&'a Rejection>,
    #[serde(rename = "Returned", skip_serializing_if = "Vec::is_empty")]
    returned: Vec<ReturnedBody<'a>>,
}

/// What one op of an applied entry returned: JSON.
#[derive(Serialize)]
struct ReturnedBody<'a> {
    #[serde(rename = "Op")]
    op: u32,
    #[serde(rename = "Data")]
    data: Option<&'a RawValue>,
    /// Why an op that fails alone (log format v9) wrote nothing.
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> OutcomeBody<'a> {
    fn of(outcome: Option<&'a Outcome>) -> Self {
        match outcome {
            None => OutcomeBody {
                status: "pending",
                rejection: None,
                returned: Vec::new(),
            },
            Some(Outcome::Expired) => OutcomeBody {
                status: "expired",
                rejection: None,
                returned: Vec::new(),
            },
            Some(Outcome::Applied(returned)) => OutcomeBody {
                status: "applied",
                rejection: None,
                returned: returned
                    .iter()
                    .map(|r| ReturnedBody {
                        op: r.op,
                        // Every op HTTP can send returns JSON (or nothing).
                        data: r
                            .data
                            .as_deref()
                            .and_then(|d| serde_json::from_str::<&RawValue>(d).ok()),
                        error: r.error.as_deref(),
                    })
                    .collect(),
            },
            Some(Outcome::Rejected(r)) => OutcomeBody {
                status: "rejected",
                rejection: Some(r),
                returned: Vec::new(),
            },
        }
    }
}

#[derive(Serialize)]
struct PositionBody<'a> {
    #[serde(rename = "Partition")]
    partition: u32,
    #[serde(rename = "Offset")]
    offset: u64,
    #[serde(rename = "Outcome", skip_serializing_if = "Option::is_none")]
    outcome: Option<OutcomeBody<'a>>,
}

#[derive(Serialize)]
struct PositionsBody<'a> {
    #[serde(rename = "Positions")]
    positions: Vec<PositionBody<'a>>,
}

#[derive(Serialize)]
struct OutcomesBody<'a> {
    #[serde(rename = "Outcomes")]
    outcomes: Vec<PositionBody<'a>>,
}

/// `{"Positions":[{"Partition","Offset"[,"Outcome"]}]}` for a write.
pub fn positions(results: &[EntryResult]) -> Vec<u8> {
    let items: Vec<PositionBody> = results
        .iter()
        .map(|r| PositionBody {
            partition: r.position.partition,
            offset: r.position.offset,
            outcome: r.outcome.as_ref().map(|o| OutcomeBody::of(o.as_ref())),
        })
        .collect();
    serde_json::to_vec(&PositionsBody { positions: items }).expect("serializes")
}

/// `{"Outcomes":[{"Partition","Offset","Outcome"}]}`.
pub fn outcomes(results: &[(Position, Option<Outcome>)]) -> Vec<u8> {
    let items: Vec<PositionBody> = results
        .iter()
        .map(|(p, o)| PositionBody {
            partition: p.partition,
            offset: p.offset,
            outcome: Some(OutcomeBody::of(o.as_ref())),
        })
        .collect();
    serde_json::to_vec(&OutcomesBody { outcomes: items }).expect("serializes")
}

/// A query string the endpoint could not read, as the API's JSON error (axum's own rejection
/// is plain text, which clients parsing `{"error":...}` cannot read).
pub fn query_error(rejection: &axum::extract::rejection::QueryRejection) -> Response {
    error(&ServiceError::bad_request(
        "bad_query",
        format!(
            "the query string is not understood: {}",
            rejection.body_text()
        ),
    ))
}

/// The HTTP status of a service error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    }
}

/// `{"error":{"code","message"}}` with the matching status.
/// A service call's JSON body as a 200, or its error.
pub fn json_or_error(result: Result<Vec<u8>, ServiceError>) -> Response {
    match result {
        Ok(body) => json(StatusCode::OK, body),
        Err(e) => error(&e),
    }
}

pub fn error(e: &ServiceError) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({
        "error": { "code": e.code, "message": e.message }
    }))
    .expect("serializes");
    json(status_of(e.kind), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_keep_their_field_order() {
        let results = [EntryResult {
            position: Position {
                partition: 1,
                offset: 7,
            },
            outcome: Some(Some(Outcome::Rejected(Rejection {
                kind: crate::service::RejectionKind::ConditionFailed,
                op: Some(0),
                message: "no".into(),
            }))),
        }];
        assert_eq!(
            String::from_utf8(positions(&results)).unwrap(),
            r#"{"Positions":[{"Partition":1,"Offset":7,"Outcome":{"Status":"rejected","Kind":"condition_failed","Op":0,"Message":"no"}}]}"#
        );
    }

    #[test]
    fn times_render_as_humantime_does_and_out_of_range_ones_as_numbers() {
        let general = |ms: i64| {
            let time = UNIX_EPOCH + Duration::from_millis(ms as u64);
            format!("\"{}\"", humantime::format_rfc3339_millis(time))
        };
        let mut times: Vec<i64> = vec![0, 1, 999, 1000, 1001, 1000, LAST_RFC3339_MS];
        // Runs within one second, across second, minute, day and year boundaries, and back.
        for base in [
            1_683_468_191_000_i64,
            1_704_067_199_000,
            LAST_RFC3339_MS - 999,
        ] {
            times.extend([
                base,
                base + 1,
                base + 999,
                base + 1000,
                base + 5,
                base - 1,
                base,
            ]);
        }
        for ms in times.into_iter().filter(|ms| *ms <= LAST_RFC3339_MS) {
            let mut out = Vec::new();
            write_time(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), general(ms), "{ms}");
        }
        for ms in [-1, -1000, i64::MIN, LAST_RFC3339_MS + 1, i64::MAX] {
            let mut out = Vec::new();
            write_time(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), ms.to_string());
        }
    }

    #[test]
    fn records_render_data_verbatim_with_millisecond_times() {
        let r = Record {
            pk: "p\"1".into(),
            sk: "\u{0}".into(),
            data_json: r#"{"hey":"ho","n":1.50}"#.into(),
            created_at_ms: 1_683_468_191_123,
            updated_at_ms: 1_683_468_191_000,
            expires_at_ms: None,
            own_deadline: false,
        };
        let body = String::from_utf8(records(std::slice::from_ref(&r), Some("s"))).unwrap();
        assert_eq!(
            body,
            r#"{"Records":[{"Pk":"p\"1","Sk":"\u0000","Data":{"hey":"ho","n":1.50},"CreatedAt":"2023-05-07T14:03:11.123Z","UpdatedAt":"2023-05-07T14:03:11.000Z"}],"NextCursor":"s"}"#
        );
        let expiring = Record {
            expires_at_ms: Some(1_683_468_251_000),
            ..r
        };
        let body = String::from_utf8(records(std::slice::from_ref(&expiring), None)).unwrap();
        assert!(
            body.ends_with(r#""UpdatedAt":"2023-05-07T14:03:11.000Z","ExpiresAt":"2023-05-07T14:04:11.000Z"}]}"#),
            "{body}"
        );
        let own = Record {
            own_deadline: true,
            ..expiring
        };
        let body = String::from_utf8(records(&[own], None)).unwrap();
        assert!(
            body.ends_with(r#""ExpiresAt":"2023-05-07T14:04:11.000Z","OwnTtl":true}]}"#),
            "{body}"
        );
        assert_eq!(
            String::from_utf8(records(&[], None)).unwrap(),
            r#"{"Records":[]}"#
        );
    }
}
