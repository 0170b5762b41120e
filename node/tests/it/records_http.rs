//! Runs every request of the repository's `records.http`, in order, against a fresh node and
//! checks each answer against the `# Expect:` line written under its title.

use crate::common;

use common::{Node, normalize_times};
use serde_json::Value;

struct Request {
    title: String,
    method: String,
    url: String,
    body: String,
    expect_status: u16,
    expect_body: Option<String>,
}

fn parse(file: &str) -> Vec<Request> {
    let mut requests = Vec::new();
    for block in file.split("\n###").skip(1) {
        let mut lines = block.lines();
        let title = lines.next().unwrap().trim().to_string();
        let mut expect = None;
        let mut request_line = None;
        let mut body = String::new();
        let mut in_body = false;
        for line in lines {
            if request_line.is_none() {
                if let Some(e) = line.strip_prefix("# Expect:") {
                    expect = Some(e.trim().to_string());
                } else if !line.starts_with('#') && !line.trim().is_empty() {
                    request_line = Some(line.trim().to_string());
                }
            } else if !in_body {
                // Headers until the blank line.
                in_body = line.trim().is_empty();
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
        let expect = expect.unwrap_or_else(|| panic!("request {title:?} has no `# Expect:` line"));
        let (status, expect_body) = match expect.split_once(' ') {
            Some((s, b)) => (s, Some(b.to_string())),
            None => (expect.as_str(), None),
        };
        let (method, url) = request_line
            .unwrap()
            .split_once(' ')
            .map(|(m, u)| (m.to_string(), u.to_string()))
            .unwrap();
        requests.push(Request {
            title,
            method,
            url,
            body: body.trim().to_string(),
            expect_status: status.parse().unwrap(),
            expect_body,
        });
    }
    requests
}

#[test]
fn every_request_in_records_http_gives_its_documented_answer() {
    let file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../records.http")).unwrap();
    let requests = parse(&file);
    assert!(
        requests.len() >= 20,
        "records.http has {} requests",
        requests.len()
    );
    let node = Node::start();
    let client = reqwest::blocking::Client::new();
    for r in &requests {
        let url = r
            .url
            .replace("localhost:8190", &format!("127.0.0.1:{}", node.api))
            .replace("localhost:8191", &format!("127.0.0.1:{}", node.internal));
        let response = match r.method.as_str() {
            "GET" => client.get(&url).send(),
            "POST" => client
                .post(&url)
                .header("content-type", "application/json")
                .body(r.body.clone())
                .send(),
            m => panic!("unsupported method {m}"),
        }
        .unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        assert_eq!(
            status, r.expect_status,
            "{:?}: status (body {text})",
            r.title
        );
        let Some(expected) = &r.expect_body else {
            continue;
        };
        match serde_json::from_str::<Value>(expected) {
            Ok(expected) => {
                let mut actual: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{:?}: non-JSON answer ({e}): {text}", r.title));
                normalize_times(&mut actual);
                assert_eq!(actual, expected, "{:?}", r.title);
            }
            Err(_) => assert_eq!(text, *expected, "{:?}", r.title),
        }
    }
}
