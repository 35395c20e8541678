//! `faye subscribe` and `faye publish` end to end, against `faye serve`: a pipe
//! of 10,000 lines over each transport, received in order; the exit codes and
//! errors; `--header`, `--proxy` and `--ca-cert`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faye_testkit::server::{FayeProcess, serve_command};
use faye_testkit::within;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const FAYE: &str = env!("CARGO_BIN_EXE_faye");
const LONG: Duration = Duration::from_secs(120);

fn faye(args: &[&str]) -> Command {
    let mut cmd = Command::new(FAYE);
    cmd.args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `faye ARGS` to the end: exit code, stdout, stderr.
async fn run(args: &[&str]) -> (i32, String, String) {
    let out = within(LONG, "faye to exit", faye(args).output()).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// Starts `faye subscribe ARGS` and waits until it says it is subscribed.
async fn subscriber(args: &[&str]) -> Child {
    let mut child = faye(args).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    within(LONG, "the subscriber to subscribe", async {
        loop {
            let line = stderr.next_line().await.unwrap().expect("subscribed line");
            if line.starts_with("faye: subscribed to") {
                break;
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    child
}

async fn pipe_of_10_000_lines(transport: &str) {
    let server = FayeProcess::serve(FAYE, &[]).await;
    let url = format!("http://{}/bayeux", server.addr());
    let sub = subscriber(&[
        "subscribe",
        &url,
        "/pipe",
        "--count",
        "10000",
        "--timeout",
        "120",
        "--transport",
        transport,
    ])
    .await;
    let mut publisher = faye(&["publish", &url, "/pipe", "--transport", transport]);
    let mut publisher = publisher.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let lines: String = (0..10_000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let published = within(LONG, "the publisher", publisher.wait_with_output()).await.unwrap();
    assert_eq!(published.status.code(), Some(0), "{}", String::from_utf8_lossy(&published.stderr));

    let received = within(LONG, "the subscriber", sub.wait_with_output()).await.unwrap();
    assert_eq!(received.status.code(), Some(0), "{}", String::from_utf8_lossy(&received.stderr));
    let stdout = String::from_utf8(received.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10_000);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(*line, json!({"channel": "/pipe", "data": {"n": n}}), "line {n}");
    }
}

#[tokio::test]
async fn a_pipe_of_10_000_lines_arrives_in_order_over_websocket() {
    pipe_of_10_000_lines("websocket").await;
}

#[tokio::test]
async fn a_pipe_of_10_000_lines_arrives_in_order_over_long_polling() {
    pipe_of_10_000_lines("long-polling").await;
}

#[tokio::test]
async fn exit_codes_and_errors() {
    let server = FayeProcess::serve(FAYE, &[]).await;
    let url = format!("http://{}/bayeux", server.addr());

    let (code, _, err) = run(&["publish", &url, "/*", "1"]).await;
    assert_eq!((code, err.trim()), (4, "faye: rejected by the server: 405:/*:Invalid channel"));

    let (code, _, err) = run(&["publish", &url, "/a", "{bad"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("faye: the message is not JSON"), "{err}");

    let mut bad_line = faye(&["publish", &url, "/a"]).stdin(Stdio::piped()).spawn().unwrap();
    bad_line.stdin.take().unwrap().write_all(b"1\nnope\n").await.unwrap();
    let out = bad_line.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2 is not JSON"));

    let (code, _, err) = run(&["subscribe", &url, "/meta/x"]).await;
    assert_eq!(
        (code, err.trim()),
        (4, "faye: rejected by the server: 403:/meta/x:Forbidden channel")
    );

    // Nothing listens there: the reason is given.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = format!("http://{}/bayeux", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, err) = run(&["publish", &nowhere, "/a", "1", "--timeout", "1"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no acknowledgement within 1s (last: network error:"), "{err}");

    let (code, out, _) = run(&["subscribe", &url, "/quiet", "--timeout", "0.5"]).await;
    assert_eq!((code, out.as_str()), (0, ""), "a timeout without --count is the end");
    let (code, _, err) =
        run(&["subscribe", &url, "/quiet", "--count", "1", "--timeout", "0.5"]).await;
    assert_eq!((code, err.lines().last().unwrap()), (3, "faye: timed out before 1 messages"));

    let (code, _, err) = run(&["publish", &url, "/a", "1", "--header", "no colon"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&["publish", &url, "/a", "1", "--ca-cert", "/nonexistent.pem"]).await;
    assert_eq!(code, 1, "{err}");
}

/// The first request head a listener receives.
async fn first_head(listener: TcpListener) -> String {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = vec![0; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn headers_go_on_http_requests_and_websocket_upgrades() {
    for transport in ["websocket", "long-polling"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/bayeux", listener.local_addr().unwrap());
        let head = tokio::spawn(first_head(listener));
        let args = [
            "publish",
            &url,
            "/a",
            "1",
            "--timeout",
            "1",
            "--transport",
            transport,
            "-H",
            "X-Test: one",
            "--header",
            "Authorization: Bearer two",
        ];
        let (code, _, _) = run(&args).await;
        assert_eq!(code, 3);
        let head = head.await.unwrap().to_ascii_lowercase();
        let first = if transport == "websocket" { "get /bayeux" } else { "post /bayeux" };
        assert!(head.starts_with(first), "{head}");
        assert!(
            head.contains("x-test: one\r\n") && head.contains("authorization: bearer two\r\n"),
            "{head}"
        );
    }
}

#[tokio::test]
async fn publish_and_subscribe_through_an_http_connect_proxy() {
    let server = FayeProcess::serve(FAYE, &[]).await;
    let url = format!("http://{}/bayeux", server.addr());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(inbound);
                let mut request = String::new();
                reader.read_line(&mut request).await.unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).await.unwrap() > 2 {
                    line.clear();
                }
                log.lock().unwrap().push(request.clone());
                let target = request.split(' ').nth(1).unwrap().to_owned();
                let mut inbound = reader.into_inner();
                let mut outbound = TcpStream::connect(target).await.unwrap();
                inbound.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let sub = subscriber(&["subscribe", &url, "/p", "--count", "1", "--proxy", &proxy]).await;
    let (code, _, err) = run(&["publish", &url, "/p", "\"via proxy\"", "--proxy", &proxy]).await;
    assert_eq!(code, 0, "{err}");
    let out = within(LONG, "the subscriber", sub.wait_with_output()).await.unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"channel\":\"/p\",\"data\":\"via proxy\"}\n"
    );
    let tunnels = seen.lock().unwrap().clone();
    assert!(tunnels.len() >= 2, "{tunnels:?}");
    let connect = format!("CONNECT {} HTTP/1.1\r\n", server.addr());
    assert!(tunnels.iter().all(|r| *r == connect), "{tunnels:?}");

    // HTTP_PROXY applies when no --proxy is given, unless NO_PROXY names the host.
    let before = seen.lock().unwrap().len();
    let status =
        faye(&["publish", &url, "/p", "1"]).env("HTTP_PROXY", &proxy).status().await.unwrap();
    assert_eq!(status.code(), Some(0));
    let after = seen.lock().unwrap().len();
    assert!(after > before, "HTTP_PROXY was used");
    let mut direct = faye(&["publish", &url, "/p", "1"]);
    direct.env("HTTP_PROXY", &proxy).env("NO_PROXY", "localhost,127.0.0.1");
    assert_eq!(direct.status().await.unwrap().code(), Some(0));
    assert_eq!(seen.lock().unwrap().len(), after, "NO_PROXY was honoured");
}

#[tokio::test]
async fn ca_cert_trusts_a_self_signed_server() {
    use rcgen::{CertificateParams, KeyPair};
    let dir = std::env::temp_dir().join(format!("faye-pubsub-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let mut server =
        serve_command(FAYE, &["--tls-cert", cert_arg, "--tls-key", key_arg]).spawn().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut listening = String::new();
    within(LONG, "the server", stdout.read_line(&mut listening)).await.unwrap();
    let port = listening.trim().strip_prefix("faye-rs listening on https://127.0.0.1:").unwrap();
    let url = format!("https://localhost:{port}");

    let sub = subscriber(&["subscribe", &url, "/tls", "--count", "1", "--ca-cert", cert_arg]).await;
    let (code, _, err) = run(&["publish", &url, "/tls", "[1,2]", "--ca-cert", cert_arg]).await;
    assert_eq!(code, 0, "{err}");
    let out = within(LONG, "the subscriber", sub.wait_with_output()).await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"channel\":\"/tls\",\"data\":[1,2]}\n");

    let (code, _, err) = run(&["publish", &url, "/tls", "1", "--timeout", "1"]).await;
    assert_eq!(code, 3, "without --ca-cert the certificate is refused");
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
