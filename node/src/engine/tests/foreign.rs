//! Entries as any producer may write them: the format is public, so a CDC pipeline's bug or a
//! hand-written script can put anything in the log. Whatever it wrote, every replica must
//! come to the same outcome and the same records, and never panic (a panic met by every
//! replica at the same entry would stop that partition everywhere).

use super::*;
use proptest::prelude::*;

/// Field values chosen to reach edges: extremes of every integer width, floats past f64,
/// exponents, strings with characters of several bytes, nesting, wrong types.
fn hostile_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e308".to_string()),
        Just("-1e308".to_string()),
        Just("1e400".to_string()),
        Just("1e-400".to_string()),
        Just("0.1".to_string()),
        Just("-0.0".to_string()),
        Just("\"\"".to_string()),
        Just("\"1\"".to_string()),
        Just("\"-9223372036854775809\"".to_string()),
        Just("\"0x1.8p3\"".to_string()),
        Just("\"1e4933\"".to_string()),
        Just("\"nan\"".to_string()),
        Just("\"\\u00e9\\u00e9\"".to_string()),
        Just("\"\\ud83d\\ude00x\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        "[a-z\u{e9}\u{1F600}0-9 ._$\\[\\]@?*'-]{0,12}"
            .prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z\u{e9}]{0,3}", inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A JSONPath, a legacy path, or text that is neither.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("$".to_string()),
        Just(".".to_string()),
        Just("$..*".to_string()),
        Just("$[-1]".to_string()),
        Just("$[-9223372036854775808]".to_string()),
        Just("$[9223372036854775807]".to_string()),
        Just("$[::-1]".to_string()),
        Just("$[0:18446744073709551616:0]".to_string()),
        Just("$.a[?@.b > 1 && length(@.c) == 2]".to_string()),
        Just("$[?match(@.a, '(a+)+$')]".to_string()),
        Just("$[?search(@, '[')]".to_string()),
        Just("$['\\u00e9', 'a']".to_string()),
        Just("$.\u{e9}".to_string()),
        Just("a.b".to_string()),
        "[$.a-z\u{e9}\\[\\]0-9*?@()'=!<>&|:,-]{0,14}",
    ]
}

fn op_kind() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        12 => Just("put"),
        1 => Just("rename"),
        20 => prop::sample::select(KINDS),
    ]
}

/// Every op kind format v8 knows.
const KINDS: &[&str] = &[
    "put",
    "delete",
    "delete_key",
    "incr",
    "incr_float",
    "incr_long_double",
    "deadline",
    "json",
    "append",
    "check",
    "expire",
    "expire_key",
];

fn json_cmd() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        1 => Just("get"),
        20 => prop::sample::select(JSON_CMDS),
    ]
}

/// Every `json_cmd` format v8 knows.
const JSON_CMDS: &[&str] = &[
    "set",
    "set_if_absent",
    "set_if_present",
    "merge",
    "del",
    "clear",
    "toggle",
    "num_incr_by",
    "num_mult_by",
    "str_append",
    "arr_append",
    "arr_insert",
    "arr_pop",
    "arr_trim",
];

/// Integers a deadline or a timestamp may be given: mostly of the right type (an i64), at
/// its edges, and sometimes of another.
fn edge_int() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just(i64::MAX.to_string()),
            Just(i64::MIN.to_string()),
            Just("253402300800000".to_string()),
            (900i64..1200).prop_map(|n| n.to_string()),
        ],
        1 => prop_oneof![
            Just(u64::MAX.to_string()),
            Just("1.5".to_string()),
            Just("\"1\"".to_string()),
        ],
    ]
}

/// One op: a known kind or not, each field present or not, with values of any type.
fn op(pks: Vec<String>) -> impl Strategy<Value = String> {
    let sks = prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("\u{e9}".to_string()),
        Just("\u{0}".to_string())
    ];
    (
        (op_kind(), prop::sample::select(pks), sks),
        prop::option::weighted(
            0.8,
            prop_oneof![
                3 => hostile_json(),
                2 => (-3i64..300).prop_map(|n| n.to_string()),
                1 => (-3i64..300).prop_map(|n| format!("\"{n}\"")),
                1 => Just(r#"{"a":2,"b":[1,"x",{"a":0.5}],"c":true}"#.to_string()),
                1 => Just("[[1,2],[3]]".to_string()),
            ],
        ),
        prop::option::weighted(
            0.3,
            prop_oneof![
                Just("data == null".to_string()),
                Just("data.a > 1".to_string()),
                Just("len(data) > 2".to_string()),
                "[a-z.=<>!&|()\" 0-9\u{e9}]{0,16}",
            ],
        ),
        prop::option::weighted(
            0.1,
            prop_oneof![
                Just(format!("a\u{e9}{}", "a".repeat(61))),
                Just("f".repeat(64)),
                "[0-9a-f+\u{e9}]{0,64}",
            ],
        ),
        prop::option::of(edge_int()),
        prop::option::of(json_cmd()),
        prop::option::of(path()),
        prop::sample::subsequence(
            vec![
                "return_old",
                "return_existed",
                "keep_ttl",
                "key_ttl",
                "own_ttl",
                "if_skips",
                "field_ttl",
                "fails_alone",
            ],
            0..4,
        ),
        prop::option::of(prop_oneof![
            20 => prop::sample::select(vec!["\"nx\"", "\"xx\"", "\"gt\"", "\"lt\""])
                .prop_map(String::from),
            1 => Just("\"zz\"".to_string()),
        ]),
        prop::option::of(prop_oneof![
            20 => (0u32..3).prop_map(|n| n.to_string()),
            1 => edge_int(),
        ]),
        prop::option::of(prop_oneof![
            20 => Just(format!("\"{}\"", crate::model::pk_version(std::iter::empty()))),
            1 => hostile_json(),
        ]),
    )
        .prop_map(
            |(
                (kind, pk, sk),
                data,
                cond,
                plugin,
                expires,
                cmd,
                path,
                flags,
                expire_if,
                skips,
                version,
            )| {
                let mut fields = vec![
                    format!("\"op\":\"{kind}\""),
                    format!("\"pk\":{}", serde_json::to_string(&pk).unwrap()),
                    format!("\"sk\":{}", serde_json::to_string(&sk).unwrap()),
                ];
                let mut add = |name: &str, value: Option<String>| {
                    if let Some(value) = value {
                        fields.push(format!("\"{name}\":{value}"));
                    }
                };
                add("data", data);
                add("if", cond.map(|c| serde_json::to_string(&c).unwrap()));
                add(
                    "if_plugin",
                    plugin.map(|p| serde_json::to_string(&p).unwrap()),
                );
                add("expires_at", expires);
                add("json_cmd", cmd.map(|c| format!("\"{c}\"")));
                add("path", path.map(|p| serde_json::to_string(&p).unwrap()));
                add("expire_if", expire_if);
                add("skips_with", skips);
                add("version", version);
                for flag in flags {
                    fields.push(format!("\"{flag}\":true"));
                }
                format!("{{{}}}", fields.join(","))
            },
        )
}

/// A whole entry: any version, any timestamp, a few ops over a few pks of partition 1 (and
/// sometimes one of another partition).
fn entry() -> impl Strategy<Value = Vec<u8>> {
    // One in ten ops names a pk of another partition.
    let mut pks: Vec<String> = std::iter::repeat_n(pks_in(1, 3), 3).flatten().collect();
    pks.push(pks_in(2, 1).remove(0));
    (
        prop_oneof![
            10 => Just("9".to_string()),
            5 => (1u64..=9).prop_map(|v| v.to_string()),
            1 => prop_oneof![Just("10".to_string()), edge_int()],
        ],
        prop_oneof![
            10 => (1000i64..1100).prop_map(|t| t.to_string()),
            1 => edge_int(),
        ],
        prop_oneof![
            1 => Just(Vec::new()),
            6 => prop::collection::vec(op(pks.clone()), 1..2),
            3 => prop::collection::vec(op(pks), 2..5),
        ],
    )
        .prop_map(|(version, ts, ops)| {
            format!(
                r#"{{"v":{version},"ts_ms":{ts},"ops":[{}]}}"#,
                ops.join(",")
            )
            .into_bytes()
        })
}

/// Applies `log` to a new partition store, `batch` entries at a time; its digest and what each
/// entry came to.
fn replay(log: &[LogRecord], batch: usize, with_index: bool) -> (String, Vec<String>) {
    let rules = TestRules::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open_partition(dir.path(), 1);
    let index = with_index.then(|| ReadIndex::load(&store, usize::MAX).unwrap());
    let mut outcomes = Vec::new();
    let mut applied = 0;
    while applied < log.len() {
        let chunk = &log[applied..(applied + batch).min(log.len())];
        let rules = Rules {
            index: index.as_ref(),
            ..rules.rules()
        };
        let result = apply_and_commit(&store, rules, chunk).unwrap();
        if let Some(index) = &index {
            index.apply(result.writes.iter());
        }
        for (offset, rejection) in result.rejections {
            outcomes.push(format!(
                "{offset}: {:?} {}",
                rejection.kind, rejection.message
            ));
        }
        for (offset, returned) in result.returned {
            outcomes.push(format!("{offset}: returned {returned:?}"));
        }
        // Stopped before an entry of a newer format, or one naming a module no replica has
        // (64 hex digits): nothing after it is applied.
        if let Some(version) = result.newer_format {
            outcomes.push(format!("stopped at {}: v{version}", result.next_offset));
            break;
        }
        if let Some(digest) = result.waiting_for {
            outcomes.push(format!("waits at {}: {digest}", result.next_offset));
            break;
        }
        applied += result.entries;
    }
    outcomes.sort();
    (format!("{:?}", store.digest().unwrap()), outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_entry_a_producer_writes_is_the_same_outcome_on_every_replica(
        log in prop::collection::vec(entry(), 1..12),
    ) {
        let text: Vec<String> = log.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect();
        let log = records(&log);
        let one_at_a_time = replay(&log, 1, false);
        let all_at_once = replay(&log, log.len(), true);
        prop_assert_eq!(one_at_a_time, all_at_once, "entries: {:#?}", text);
    }
}
