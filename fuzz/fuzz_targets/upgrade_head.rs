//! The first request of a public connection, as the listener reads it
//! before hyper (docs/architecture.md, "The life of a connection"): it
//! answers a `GET` of the WebSocket path itself and hands everything else to
//! hyper.
//!
//! Invariants, against an independent reading of HTTP/1.1's request head
//! (RFC 9112 §2–5: optional empty lines, a request line, header lines of
//! `name: value`, an empty line; each line ending in CRLF or LF):
//! - a claimed request is a `GET` of `/ws` (with any query) over HTTP/1.1,
//!   its head at most 8 KiB, with neither `Content-Length` nor
//!   `Transfer-Encoding`;
//! - its headers are the head's header lines, in order, names and values as
//!   sent (values without the blank space around them);
//! - what follows the head is handed on whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::fuzzing::first_request;
use pushgate_fuzz::Lines;

/// The longest head the listener answers itself.
const MAX_HEAD: usize = 8 * 1024;

fuzz_target!(|data: &[u8]| {
    // The listener sorts what it has read once that holds a blank line.
    if !data.windows(4).any(|w| w == b"\r\n\r\n") {
        return;
    }
    let Some(claimed) = first_request(data) else { return };
    let mut lines = Lines::new(data);
    let request_line = format!("GET {} HTTP/1.1", claimed.target);
    assert_eq!(lines.request_line(), request_line.as_bytes(), "{claimed:?}");
    let path = claimed.target.split('?').next().unwrap_or_default();
    assert_eq!(path, "/ws", "{claimed:?}");
    let mut headers = claimed.headers.iter();
    while let Some((name, value)) = lines.header() {
        let (got_name, got_value) = headers.next().expect("every header line is a header");
        assert!(got_name.as_bytes().eq_ignore_ascii_case(name), "{got_name} for {name:?}");
        assert_eq!(got_value.trim_ascii(), value, "{got_name}");
        for body in ["content-length", "transfer-encoding"] {
            assert!(!got_name.eq_ignore_ascii_case(body), "a request with {got_name} claimed");
        }
    }
    assert!(headers.next().is_none(), "a header the head does not hold");
    assert!(lines.read() <= MAX_HEAD, "a head of {} bytes claimed", lines.read());
    assert_eq!(claimed.rest, &data[lines.read()..], "what follows the head");
});
