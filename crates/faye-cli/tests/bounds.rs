//! Settings out of range are refused with a reason at start, not a panic later.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn an_enormous_timeout_or_ping_is_a_clear_error() {
    for (flag, value) in [("--timeout", "1e19"), ("--timeout", "1e30"), ("--ping", "1e19")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_faye"))
            .args(["serve", "--port", "0", flag, value])
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run faye");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for faye") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{flag} {value} was accepted: the server is running");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("faye's output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{flag} {value} was accepted");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(&format!("{flag} must be")), "{flag} {value}: {stderr}");
    }
}
