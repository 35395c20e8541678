//! `faye serve`'s settings are layered: defaults < config file < `FAYE_*`
//! environment < flags; a bad file stops the server with a message naming the
//! file, the key and the value.

use std::process::{Command, Output};

/// Runs `faye ARGS` with only the given `FAYE_*` variables set.
fn faye(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faye"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FAYE_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied()).env("RUST_BACKTRACE", "0");
    cmd.output().expect("run faye")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "faye failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

/// The `key = value` lines of a printed config, section by section.
fn values(printed: &str) -> Vec<String> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in printed.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
        } else if !line.starts_with('#') && line.contains(" = ") {
            out.push(if section.is_empty() {
                line.to_owned()
            } else {
                format!("{section}.{line}")
            });
        }
    }
    out
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("faye-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn faye_config_prints_the_defaults_and_serve_reads_them_back() {
    let printed = stdout(&faye(&["config"], &[]));
    assert!(printed.starts_with("# faye serve's settings"), "{printed}");
    let path = temp_file("defaults.toml", &printed);
    let resolved =
        stdout(&faye(&["serve", "--config", path.to_str().unwrap(), "--print-config"], &[]));
    assert_eq!(resolved, printed);
    // With nothing set, the settings in effect are the defaults.
    assert_eq!(stdout(&faye(&["serve", "--print-config"], &[])), printed);
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let path = temp_file(
        "layers.toml",
        "port = 9001\ntimeout = 30\nmount = \"/file\"\n[limits]\nmax_queue = 10\n[log]\nformat = \"json\"\n",
    );
    let out = faye(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--print-config",
            "--max-queue",
            "12",
            "--http2",
        ],
        &[("FAYE_TIMEOUT", "20"), ("FAYE_MAX_QUEUE", "11"), ("FAYE_HOST", "0.0.0.0")],
    );
    let got = values(&stdout(&out));
    let has = |line: &str| assert!(got.iter().any(|l| l == line), "no {line:?} in {got:#?}");
    has("port = 9001"); // file
    has("mount = \"/file\""); // file
    has("log.format = \"json\""); // file
    has("timeout = 20.0"); // environment over file
    has("host = \"0.0.0.0\""); // environment over default
    has("limits.max_queue = 12"); // flag over environment over file
    has("http2 = true"); // flag over default
    has("max_batch = 1000"); // default

    // The config file itself can come from the environment.
    let out = faye(&["serve", "--print-config"], &[("FAYE_CONFIG", path.to_str().unwrap())]);
    assert!(values(&stdout(&out)).iter().any(|l| l == "port = 9001"));
    // A false from the environment beats a true from the file.
    let on = temp_file("on.toml", "websocket_deflate = true\n");
    let out = faye(
        &["serve", "--config", on.to_str().unwrap(), "--print-config"],
        &[("FAYE_WEBSOCKET_DEFLATE", "false")],
    );
    assert!(values(&stdout(&out)).iter().any(|l| l == "websocket_deflate = false"));
}

#[test]
fn a_bad_file_stops_serve_with_the_file_key_and_value() {
    let path = temp_file("bad.toml", "[limits]\nmax_clients = \"many\"\n");
    let out = faye(&["serve", "--config", path.to_str().unwrap(), "--port", "0"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "Error: {}: bad value for `limits.max_clients`: \"many\" is not a non-negative integer",
            path.display()
        )
    );

    let path = temp_file("unknown.toml", "[tls]\ncrt = \"a.pem\"\n");
    let out = faye(&["serve", "--config", path.to_str().unwrap(), "--port", "0"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "Error: {}: unknown key `tls.crt` (= \"a.pem\") (did you mean `tls.cert`?); \
             `faye config` lists every key",
            path.display()
        )
    );
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let out = faye(&["serve", "--print-config"], &[("FAYE_PORT", "eighty")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'eighty' for '--port <PORT>'"), "{stderr}");
    assert!(
        stderr.contains("(the value 'eighty' came from the environment variable FAYE_PORT)"),
        "{stderr}"
    );
    // From a flag, no such line.
    let out = faye(&["serve", "--print-config", "--port", "eighty"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("environment variable"), "{stderr}");
}
