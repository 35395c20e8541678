//! `--log-format json` writes one JSON object per line, and logs at the default
//! level never hold a whole clientId (the session's only credential).

use std::process::Stdio;
use std::time::Duration;

use faye_testkit::http::{HttpConn, Request};
use faye_testkit::{QUICK, within};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

async fn post(conn: &mut HttpConn, body: Value) -> Vec<Value> {
    let res =
        within(QUICK, "a reply", conn.call(&Request::post("/bayeux").json(&body))).await.unwrap();
    res.json().as_array().unwrap().clone()
}

/// Runs a workload that logs a warning about a client (its queue overflows),
/// then stops the server; returns its stderr and the workload's client ids.
async fn workload(format: &str) -> (String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faye"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--max-queue", "2"])
        .args(["--log-format", format])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within(Duration::from_secs(20), "the listening line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr: std::net::SocketAddr =
        line.split("://").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();

    let mut conn = HttpConn::connect(addr).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = post(
            &mut conn,
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]}]),
        )
        .await;
        ids.push(reply[0]["clientId"].as_str().unwrap().to_owned());
    }
    let (a, b) = (&ids[0], &ids[1]);
    post(&mut conn, json!([{"channel": "/meta/subscribe", "clientId": a, "subscription": "/x"}]))
        .await;
    for i in 0..4 {
        post(&mut conn, json!([{"channel": "/x", "clientId": b, "data": i}])).await;
    }
    post(&mut conn, json!([{"channel": "/meta/disconnect", "clientId": b}])).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-s", "TERM", &pid]).status().unwrap();
    let out =
        within(Duration::from_secs(15), "faye to stop", child.wait_with_output()).await.unwrap();
    (String::from_utf8(out.stderr).unwrap(), ids)
}

#[tokio::test]
async fn json_logs_are_json_lines_without_client_ids() {
    let (stderr, ids) = workload("json").await;
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        assert!(line["timestamp"].is_string() && line["level"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    let messages: Vec<&str> =
        lines.iter().map(|l| l["fields"]["message"].as_str().unwrap()).collect();
    assert!(messages.contains(&"serving"), "{messages:?}");
    assert!(messages.contains(&"stopped"), "{messages:?}");
    // The overflowing client is named by its tag only.
    let full = lines
        .iter()
        .find(|l| l["fields"]["message"].as_str().unwrap().starts_with("queue full"))
        .unwrap_or_else(|| panic!("no queue-full warning in {stderr}"));
    assert_eq!(full["level"], "WARN");
    assert_eq!(full["fields"]["client"], ids[0][..6]);
    // Within the batch that caused it: the publisher's request, by its fields.
    let batch = &full["spans"][0];
    assert_eq!(batch["name"], "batch", "{full}");
    assert_eq!(batch["transport"], "long-polling", "{full}");
    assert_eq!(batch["client"], ids[1][..6], "{full}");
    assert!(batch["remote"].as_str().is_some_and(|r| r.starts_with("127.0.0.1:")), "{full}");
    for id in &ids {
        assert!(!stderr.contains(id.as_str()), "client id {id} in the logs:\n{stderr}");
    }
}

#[tokio::test]
async fn text_logs_hold_no_client_ids_either() {
    let (stderr, ids) = workload("text").await;
    assert!(stderr.contains("queue full"), "{stderr}");
    assert!(!stderr.trim_start().starts_with('{'), "{stderr}");
    for id in &ids {
        assert!(!stderr.contains(id.as_str()), "client id {id} in the logs:\n{stderr}");
    }
}
