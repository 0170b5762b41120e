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

/// `/records` requests from API clients (no `Origin`, no `Accept-Encoding`) go straight to their
/// handler; the same requests asking `Accept-Encoding: identity` take the router (through the
/// compression layer, which leaves them plain). Both ways must answer alike, errors included.
#[test]
fn records_requests_answer_alike_straight_to_their_handler_or_through_the_router() {
    let node = Node::start();
    let (status, reply) = node.post(
        "/records/put",
        json!({"Records": [{"pk": "same", "sk": "a", "data": {"x": 1}}], "wait": true}),
    );
    assert_eq!(status, 200, "{reply}");
    let position = reply["Positions"][0].clone();
    let too_large = format!(
        r#"{{"Records":[{{"pk":"big","data":"{}"}}]}}"#,
        "x".repeat(9 << 20)
    );
    let requests: Vec<(&str, String)> = vec![
        (
            "/records/get",
            json!({"Records": [{"pk": "same", "sk": "a"}, {"pk": "none"}]}).to_string(),
        ),
        (
            "/records/get",
            json!({"records": [{"Pk": "same", "Sk": "a"}], "min_offsets": [position]}).to_string(),
        ),
        (
            "/records/list",
            json!({"pk": "same", "limit": 10}).to_string(),
        ),
        (
            "/records/outcomes",
            json!({"Positions": [position]}).to_string(),
        ),
        ("/records/get", "{not json".into()),
        ("/records/get", "".into()),
        ("/records/get", json!({"Records": []}).to_string()),
        (
            "/records/put",
            json!({"Records": [{"pk": "same", "data": 1, "if": "pk"}]}).to_string(),
        ),
        (
            "/records/delete",
            json!({"Records": [{"pk": 5}]}).to_string(),
        ),
        (
            "/records/batch",
            json!({"Records": [{"op": "upsert", "pk": "same"}]}).to_string(),
        ),
        ("/records/nosuch", "{}".into()),
        (
            "/records/%67et",
            json!({"Records": [{"pk": "same", "sk": "a"}]}).to_string(),
        ),
        ("/records/get/", "{}".into()),
        ("/records/put", too_large),
    ];
    let send = |path: &str, body: &str, routed: bool| {
        let mut request = node.client().post(node.url(path)).body(body.to_string());
        if routed {
            request = request.header("accept-encoding", "identity");
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let headers = (header("content-type"), header("firescroll-token"));
        (status, headers, response.text().unwrap())
    };
    for (path, body) in &requests {
        let direct = send(path, body, false);
        let routed = send(path, body, true);
        assert_eq!(direct, routed, "{path} {body:.80}");
    }
    // Writes: the same answers but for their positions.
    let mut answers = Vec::new();
    for (routed, pk) in [(false, "w1"), (true, "w2")] {
        let body = json!({"Records": [{"pk": pk, "sk": "s", "data": [1]}], "wait": true});
        let (status, _, text) = send("/records/put", &body.to_string(), routed);
        let mut reply: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(reply["Positions"][0]["Offset"].is_u64(), "{reply}");
        reply["Positions"][0]["Offset"] = json!(0);
        reply["Positions"][0]["Partition"] = json!(0);
        answers.push((status, reply));
    }
    assert_eq!(answers[0], answers[1]);
}
