//! Tokens at three levels, enforced the same way on HTTP and the Redis protocol.

use crate::common;

use common::Node;
use redis::Commands;
use serde_json::json;

fn secured() -> Node {
    Node::start_with(&[
        ("READ_TOKENS", "r1,r2"),
        ("WRITE_TOKENS", "w1"),
        ("ADMIN_TOKENS", "a1"),
    ])
}

fn http(
    node: &Node,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::blocking::Client::new()
        .post(node.url(path))
        .body(body.to_string());
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().unwrap()).unwrap(),
    )
}

#[test]
fn http_requires_a_token_of_the_right_level() {
    let node = secured();
    let get = json!({"Records": [{"pk": "k", "sk": ""}]});
    let put = json!({"Records": [{"pk": "k", "sk": "", "data": 1}], "wait": true});
    let (status, reply) = http(&node, "/records/get", None, get.clone());
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{reply}"
    );
    assert_eq!(
        http(&node, "/records/get", Some("wrong"), get.clone()).0,
        401
    );
    assert_eq!(http(&node, "/records/get", Some("r2"), get.clone()).0, 200);
    let (status, reply) = http(&node, "/records/put", Some("r1"), put.clone());
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{reply}"
    );
    assert_eq!(http(&node, "/records/put", Some("w1"), put.clone()).0, 200);
    assert_eq!(http(&node, "/records/put", Some("a1"), put).0, 200);
    let (_, got) = http(&node, "/records/get", Some("r1"), get);
    assert_eq!(got["Records"][0]["Data"], json!(1));
    // Health checks stay open.
    assert_eq!(node.get_url(&node.url("/up")).0, 200);
    assert_eq!(node.get_url(&node.url("/ready")).0, 200);
}

fn raw(node: &Node, script: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.resp)).unwrap();
    stream.write_all(script).unwrap();
    stream.write_all(b"QUIT\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn redis_requires_auth_and_read_tokens_cannot_write() {
    let node = secured();
    assert_eq!(
        raw(&node, b"GET k\r\n"),
        "-NOAUTH Authentication required.\r\n+OK\r\n"
    );
    assert_eq!(
        raw(&node, b"AUTH nope\r\nGET k\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n+OK\r\n"
    );
    assert_eq!(
        raw(&node, b"AUTH r1\r\nGET k\r\nSET k v\r\nRESET\r\nGET k\r\n"),
        "+OK\r\n$-1\r\n-NOPERM this token has no permissions to run the 'set' command\r\n+RESET\r\n-NOAUTH Authentication required.\r\n+OK\r\n"
    );
    assert!(raw(&node, b"HELLO 3 AUTH default wrong\r\n").starts_with("-WRONGPASS"));
    // The operator's commands (Redis's @admin) take an admin token; looking is a read.
    let noperm = |command: &str| {
        format!("-NOPERM this token has no permissions to run the '{command}' command\r\n")
    };
    for token in ["r1", "w1"] {
        let out = raw(
            &node,
            format!("AUTH {token}\r\nCONFIG SET slowlog-max-len 5\r\nSLOWLOG RESET\r\nCLIENT KILL ID 999\r\nCLIENT NO-EVICT on\r\nMONITOR\r\nSLOWLOG LEN\r\nCONFIG GET slowlog-max-len\r\n").as_bytes(),
        );
        assert_eq!(
            out,
            format!(
                "+OK\r\n{}{}{}{}{}:0\r\n*2\r\n$15\r\nslowlog-max-len\r\n$3\r\n128\r\n+OK\r\n",
                noperm("config"),
                noperm("slowlog"),
                noperm("client"),
                noperm("client"),
                noperm("monitor")
            ),
            "{token}"
        );
    }
    assert!(
        raw(&node, b"AUTH a1\r\nCONFIG SET slowlog-max-len 5\r\n").starts_with("+OK\r\n+OK\r\n")
    );
    // An administrator's connection may exempt itself from the client-memory bound (`e`).
    let exempt = raw(&node, b"AUTH a1\r\nCLIENT NO-EVICT on\r\nCLIENT INFO\r\n");
    assert!(
        exempt.starts_with("+OK\r\n+OK\r\n$") && exempt.contains(" flags=e "),
        "{exempt}"
    );
    // redis-rs sends AUTH (and HELLO ... AUTH for RESP3) from the URL's password.
    for url in [
        format!("redis://:w1@127.0.0.1:{}/", node.resp),
        format!("redis://default:w1@127.0.0.1:{}/?protocol=resp3", node.resp),
    ] {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () = con.set("k", "v").unwrap();
        assert_eq!(con.get::<_, String>("k").unwrap(), "v");
    }
}

#[test]
fn an_open_node_says_auth_is_not_configured() {
    let node = Node::start();
    let reply = raw(&node, b"AUTH x\r\nGET k\r\n");
    assert!(
        reply.starts_with("-ERR AUTH <password> called without any password configured"),
        "{reply}"
    );
    assert!(
        reply.contains("$-1\r\n"),
        "open nodes serve without AUTH: {reply}"
    );
}
