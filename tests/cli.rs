//! The `pushgate` binary's subcommands: `push` (the operator's gRPC client)
//! against a real gateway, and `check-config` refusing bad configuration with
//! a message that names the key and the file.

mod common;

use std::process::{Command, Output};

use common::ws::next_text;

fn pushgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushgate")).args(args).output().expect("run pushgate")
}

#[tokio::test]
async fn push_subcommand_delivers_and_reports() {
    let gw = common::start(common::settings()).await;
    let mut tab = gw.compat_tab("u1", "e").await;
    let url = gw.internal_url();
    let output = tokio::task::spawn_blocking(move || {
        pushgate(&["push", "--user", "u1", "--event", "e", "--addr", &url, "hello from the cli"])
    })
    .await
    .expect("join");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "delivered=1 seq=1");
    assert_eq!(next_text(&mut tab).await, "hello from the cli");
}

#[tokio::test]
async fn push_subcommand_reports_a_refusal() {
    let settings = pushgate::config::Settings { api_keys: Some(vec!["k1".into()]), ..common::settings() };
    let gw = common::start(settings).await;
    let url = gw.internal_url();
    let output = tokio::task::spawn_blocking(move || {
        pushgate(&["push", "--user", "u1", "--event", "e", "--addr", &url, "no key"])
    })
    .await
    .expect("join");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unauthenticated") || stderr.contains("unauthenticated"), "{stderr}");
}

#[test]
fn check_config_names_the_bad_key_and_the_file() {
    let dir = std::env::temp_dir().join(format!("pushgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gateway.toml");
    std::fs::write(&file, "max-connections = 10\nmax-conections = 5\n").expect("write");
    let output = pushgate(&["check-config", "--config", file.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max-conections") && stderr.contains("gateway.toml"), "{stderr}");

    std::fs::write(&file, "history-ttl = \"5 parsecs\"\n").expect("write");
    let output = pushgate(&["check-config", "--config", file.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("history-ttl"), "{:?}", output);

    let output = pushgate(&["check-config", "--public-addr", "0.0.0.0:8080"]);
    assert!(!output.status.success(), "a public bind with --auth none is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("public-addr"));

    std::fs::write(&file, "max-connections = 10\n").expect("write");
    let output = pushgate(&["check-config", "--config", file.to_str().expect("utf-8"), "--max-connections", "7"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("max_connections: 7"), "the flag beats the file: {stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every duration and size flag, with the name its value is given under.
const DURATION_FLAGS: &[&str] = &[
    "register-timeout",
    "handshake-timeout",
    "ping-interval",
    "pong-timeout",
    "drain-timeout",
    "auth-timeout",
    "auth-cache-ttl",
    "history-ttl",
    "history-meta-ttl",
    "request-body-timeout",
    "node-lease",
    "write-delay",
];
const SIZE_FLAGS: &[&str] = &[
    "max-connections",
    "max-connections-per-ip",
    "max-handshakes",
    "max-connections-per-user",
    "max-message-bytes",
    "max-client-frame-bytes",
    "max-events-per-conn",
    "conn-queue-bytes",
    "socket-send-buffer",
    "history-size",
    "history-max-bytes",
    "listen-backlog",
    "max-memory",
];

/// Runs `check-config` with `flag` set to `value` as a flag, as a
/// `PUSHGATE_*` variable and in a TOML file, and asserts each is refused with
/// a message naming the flag — never a panic (exit 101) nor accepted.
fn refused_everywhere(flag: &str, value: &str, toml_value: &str, dir: &std::path::Path) {
    let env = format!("PUSHGATE_{}", flag.to_uppercase().replace('-', "_"));
    let file = dir.join(format!("{flag}.toml"));
    std::fs::write(&file, format!("{flag} = {toml_value}\n")).expect("write");
    let runs = [
        (
            "flag",
            Command::new(env!("CARGO_BIN_EXE_pushgate")).args(["check-config", &format!("--{flag}"), value]).output(),
        ),
        ("env", Command::new(env!("CARGO_BIN_EXE_pushgate")).arg("check-config").env(&env, value).output()),
        (
            "file",
            Command::new(env!("CARGO_BIN_EXE_pushgate"))
                .args(["check-config", "--config", file.to_str().expect("utf-8")])
                .output(),
        ),
    ];
    for (how, output) in runs {
        let output = output.expect("run pushgate");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag}={value} by {how} was accepted");
        assert_ne!(output.status.code(), Some(101), "{flag}={value} by {how} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag}={value} by {how}: {stderr}");
        assert!(stderr.contains(flag), "{flag}={value} by {how}: the message names the flag: {stderr}");
    }
}

#[test]
fn absurd_durations_and_sizes_are_config_errors_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("pushgate-absurd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for flag in DURATION_FLAGS {
        for value in ["99999999999999999999h", "10000000000000000000s", "99999999999999999999999s"] {
            refused_everywhere(flag, value, &format!("\"{value}\""), &dir);
        }
    }
    for flag in SIZE_FLAGS {
        for value in ["18446744073709551615", "99999999999999999999999"] {
            refused_everywhere(flag, value, value, &dir);
        }
    }
    // Zero where zero would lock everyone out or make no sense.
    for flag in ["max-connections", "max-handshakes", "max-connections-per-user", "max-message-bytes", "listen-backlog"]
    {
        refused_everywhere(flag, "0", "0", &dir);
    }
    for flag in ["register-timeout", "handshake-timeout", "auth-timeout", "node-lease"] {
        refused_everywhere(flag, "0s", "\"0s\"", &dir);
    }
    // A lease under a second could not be refreshed in time.
    refused_everywhere("node-lease", "500ms", "\"500ms\"", &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_broker_settings_are_config_errors_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("pushgate-broker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for url in ["kafka://127.0.0.1:9092", "redis://", "redis://127.0.0.1:port", "redis://127.0.0.1:6379/x", "redis"] {
        refused_everywhere("broker", url, &format!("\"{url}\""), &dir);
    }
    for (flag, value) in [("broker-prefix", "a b"), ("broker-prefix", "a/b"), ("node-id", "n*1"), ("node-id", "n>")] {
        refused_everywhere(flag, value, &format!("\"{value}\""), &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let fine = pushgate(&["check-config", "--broker", "memory", "--broker-prefix", "team-a", "--node-id", "n1"]);
    assert!(fine.status.success(), "{}", String::from_utf8_lossy(&fine.stderr));
}

#[test]
fn boolean_flags_work_bare_or_with_a_value() {
    let bare = pushgate(&["check-config", "--public-addr", "0.0.0.0:8080", "--insecure"]);
    assert!(bare.status.success(), "bare --insecure: {}", String::from_utf8_lossy(&bare.stderr));
    let off = pushgate(&["check-config", "--public-addr", "0.0.0.0:8080", "--insecure", "false"]);
    assert!(!off.status.success(), "--insecure false keeps the secure-bind rule");
}
