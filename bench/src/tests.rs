//! A tiny run of every phase against a gateway started inside the test
//! process (`pushgate::server::start` on 127.0.0.1:0), measured through
//! `--attach` with this process's own pid. Nothing asserts on timing: the
//! test checks that each phase runs, ends, and reports its section.

use std::sync::Arc;

use clap::Parser as _;
use pushgate::authenticators::TokenIsUser;
use pushgate::config::Settings;
use pushgate::server::{self, Listeners};

use crate::{Args, phases};

/// Starts a gateway in this process; returns its public and internal addresses.
async fn gateway() -> (String, String) {
    let settings = Settings {
        public_addr: Some("127.0.0.1:0".parse().expect("addr")),
        internal_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..Default::default()
    };
    let config = settings.resolve().expect("a valid configuration");
    let listeners = Listeners::bind(&config).expect("bind");
    let running = server::start(config, listeners, Arc::new(TokenIsUser), std::future::pending()).await.expect("start");
    let addrs = (running.public_addr.to_string(), running.internal_addr.to_string());
    // The gateway lives as long as the test's runtime.
    std::mem::forget(running);
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_phase_runs_on_a_tiny_gateway() {
    let (public, internal) = gateway().await;
    let pid = std::process::id().to_string();
    let args = Args::parse_from([
        "pushgate-bench",
        "--attach",
        &public,
        &internal,
        &pid,
        "--connections",
        "20",
        "--pushes",
        "400",
        "--streams",
        "2",
        "--phases",
        "p6,p11,p1,p4,p7,p8,p10",
        "--idle-samples",
        "10",
        "--load-duration",
        "300ms",
        "--duration-cap",
        "10s",
        "--unary-pushes",
        "300",
        "--unary-concurrency",
        "8",
        "--history-messages",
        "640",
        "--slow-message-bytes",
        "4096",
        "--slow-rate",
        "50",
        "--broker-rows",
    ]);
    let place = args.place().expect("an attached gateway");
    let report = phases::run(&args, place).await.expect("the phases run");
    let text = report.to_string();
    for needle in [
        "P1 fan-out",
        "P11 gateway RSS",
        "P7 unary, bare tonic echo",
        "P7 unary, gateway",
        "P8 PushStream, gateway",
        "P10 at",
        "P10 others' p99",
        "--broker-rows skipped",
    ] {
        assert!(text.contains(needle), "no `{needle}` in the report:\n{text}");
    }
    assert!(text.contains("| P7 unary, gateway | 300 | 0 |"), "every unary push acked:\n{text}");
    assert!(text.contains("| P8 PushStream, gateway | 400 | 0 |"), "every streamed push acked:\n{text}");
}

#[test]
fn the_default_phases_are_the_ones_measured_against_the_floor() {
    use phases::Phase::{P1, P2, P3, P4, P4a, P5, P6};
    let args = Args::parse_from(["pushgate-bench"]);
    assert_eq!(args.phases, [P6, P1, P2, P4, P3, P4a, P5]);
    assert!(!args.more.broker_rows);
}
