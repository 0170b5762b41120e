//! What FireScroll's HTTP server also did, which clients rely on: CORS for browsers, gzip when
//! asked, and cleartext HTTP/2 (h2c) next to HTTP/1.1.

use crate::common;

use common::Node;
use serde_json::json;

/// `POST /records/get` of one record, with `headers` and nothing else (reqwest adds no
/// `Accept-Encoding` unless built with a decompression feature).
fn get_one(
    node: &Node,
    (pk, sk): (&str, &str),
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new()
        .post(node.url("/records/get"))
        .body(json!({"Records": [{"pk": pk, "sk": sk}]}).to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap()
}

#[test]
fn browsers_may_call_the_api_from_any_origin() {
    let node = Node::start();
    let client = reqwest::blocking::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, node.url("/records/get"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,authorization",
        )
        .send()
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers.contains_key("access-control-allow-methods"));
    let got = get_one(&node, ("k", ""), &[("Origin", "https://app.example")]);
    assert_eq!(got.headers()["access-control-allow-origin"], "*");
    // Only requests from browsers (with `Origin`) pass through the CORS layer; GET answers
    // always carry its headers (and `Vary: Origin`, for caches).
    let api_client = get_one(&node, ("k", ""), &[]);
    assert_eq!(api_client.status(), 200);
    assert!(
        api_client
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        api_client.headers()
    );
    let up = client.get(node.url("/up")).send().unwrap();
    assert_eq!(up.headers()["access-control-allow-origin"], "*");
    assert!(up.headers()["vary"].to_str().unwrap().contains("origin"));
}

#[test]
fn answers_are_gzipped_when_asked() {
    let node = Node::start();
    let records: Vec<_> = (0..50)
        .map(|i| json!({"pk": "z", "sk": format!("{i:03}"), "data": {"padding": "x".repeat(40)}}))
        .collect();
    node.post("/records/put", json!({"Records": records, "wait": true}));
    let client = reqwest::blocking::Client::new();
    let zipped = client
        .post(node.url("/records/list"))
        .header("Accept-Encoding", "gzip")
        .body(json!({"pk": "z"}).to_string())
        .send()
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let body = zipped.bytes().unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
    let (_, plain) = node.post_raw("/records/list", json!({"pk": "z"}).to_string());
    assert!(
        body.len() * 3 < plain.len(),
        "{} gzipped vs {} plain",
        body.len(),
        plain.len()
    );
    assert!(
        plain.starts_with("{\"Records\":["),
        "without Accept-Encoding the answer is plain JSON"
    );
    // A small answer is not worth a gzip stream: it goes out plain even when gzip is accepted.
    let small = get_one(&node, ("z", "001"), &[("Accept-Encoding", "gzip")]);
    assert!(
        small.headers().get("content-encoding").is_none(),
        "{:?}",
        small.headers()
    );
    let text = small.text().unwrap();
    assert!(text.starts_with("{\"Records\":[{"), "{text}");
}

#[test]
fn cleartext_http2_is_served_next_to_http1() {
    let node = Node::start();
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(node.url("/records/get"))
        .body(json!({"Records": [{"pk": "k", "sk": ""}]}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "{\"Records\":[]}");
}
