//! `deploy/Dockerfile` builds an image whose container serves a handshake.
//!
//! Needs a Docker daemon that can pull the base images; where there is none the
//! test says `SKIPPED` and why, and passes. Building compiles faye-rs in release
//! mode inside the container: minutes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BASES: &[&str] =
    &["docker.io/library/rust:1.89-slim-bookworm", "gcr.io/distroless/cc-debian12:nonroot"];

/// Runs `docker ARGS`, killing it after `limit`.
fn docker(args: &[&str], limit: Duration) -> Result<Output, String> {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    let start = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("docker {} took more than {limit:?}", args.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if let Err(why) = docker(&["info"], Duration::from_secs(20)) {
        return Some(format!("no Docker daemon: {why}"));
    }
    for base in BASES {
        let present = docker(&["image", "inspect", base], Duration::from_secs(20)).is_ok();
        if !present && let Err(why) = docker(&["pull", base], Duration::from_secs(300)) {
            return Some(format!("cannot pull the base image {base}: {why}"));
        }
    }
    None
}

#[test]
fn the_image_builds_and_serves_a_handshake() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: the Dockerfile was not built: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.to_str().unwrap();
    let tag = format!("faye-rs-test:{}", std::process::id());
    docker(
        &["build", "-f", &format!("{root}/deploy/Dockerfile"), "-t", &tag, root],
        Duration::from_secs(3600),
    )
    .expect("the image builds");
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", &tag], Duration::from_secs(20))
        .expect("inspect");
    let size: u64 = String::from_utf8_lossy(&size.stdout).trim().parse().unwrap();
    assert!(size < 100 << 20, "the image is {size} bytes");

    let run = docker(
        &["run", "-d", "-p", "127.0.0.1::8000", "-p", "127.0.0.1::9090", &tag],
        Duration::from_secs(60),
    )
    .expect("the container starts");
    let id = String::from_utf8_lossy(&run.stdout).trim().to_owned();
    let result = std::panic::catch_unwind(|| {
        let port = |inner: &str| -> u16 {
            let out = docker(&["port", &id, inner], Duration::from_secs(20)).unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().next().unwrap().rsplit(':').next().unwrap().parse().unwrap()
        };
        let (main, metrics) = (port("8000/tcp"), port("9090/tcp"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use faye_testkit::http::{Request, fetch};
            let start = Instant::now();
            loop {
                let ready = fetch(([127, 0, 0, 1], metrics).into(), &Request::get("/readyz")).await;
                if ready.is_ok_and(|r| r.status == 200) {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "never ready");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let handshake = serde_json::json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]);
            let res =
                fetch(([127, 0, 0, 1], main).into(), &Request::post("/bayeux").json(&handshake))
                    .await
                    .unwrap();
            assert_eq!(res.json()[0]["successful"], true, "{}", res.text());
        });
        // `docker stop` sends SIGTERM: the server drains and exits cleanly.
        docker(&["stop", "-t", "15", &id], Duration::from_secs(30)).unwrap();
        let code = docker(&["wait", &id], Duration::from_secs(30)).unwrap();
        assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0");
    });
    let _ = docker(&["rm", "-f", &id], Duration::from_secs(30));
    let _ = docker(&["rmi", &tag], Duration::from_secs(60));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
