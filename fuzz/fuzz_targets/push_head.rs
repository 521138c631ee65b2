//! The head of a producer's HTTP/1.1 request, as the internal listener reads
//! it before hyper (docs/architecture.md, "The path of a push"): it serves a
//! plain `POST /push` itself and hands everything else to hyper.
//!
//! Invariants, against an independent reading of HTTP/1.1's request head
//! (RFC 9112 §2–5: optional empty lines, a request line, header lines of
//! `name: value`, an empty line; each line ending in CRLF or LF):
//! - a request served here is `POST /push HTTP/1.1` (no query), its head
//!   within the bytes read;
//! - it has exactly one `content-length`, of plain digits, equal to the
//!   body length it is served with, and within the limit;
//! - it has no `transfer-encoding`, `expect` or `upgrade`, and its
//!   `connection` headers are `close` or `keep-alive` (close when one says so);
//! - its key is the first `authorization` header's value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::fuzzing::push_head;
use pushgate_fuzz::Lines;

/// The body limit the target serves with.
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some(head) = push_head(data, LIMIT) else { return };
    assert!(head.len <= data.len(), "{head:?}");
    let mut lines = Lines::new(&data[..head.len]);
    assert_eq!(lines.request_line(), b"POST /push HTTP/1.1", "{head:?}");
    let (mut lengths, mut close, mut authorization) = (Vec::new(), false, None);
    while let Some((name, value)) = lines.header() {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        match name.as_str() {
            "content-length" => lengths.push(value.to_vec()),
            "connection" => {
                let value = value.to_ascii_lowercase();
                assert!(value == b"close" || value == b"keep-alive", "connection: {value:?} served here");
                close |= value == b"close";
            }
            "authorization" => {
                authorization.get_or_insert(value.to_vec());
            }
            "transfer-encoding" | "expect" | "upgrade" => panic!("a request with {name} served here"),
            _ => {}
        }
    }
    assert_eq!(lines.read(), head.len, "the head ends where the listener says");
    let [length] = lengths.as_slice() else { panic!("{} content-lengths: {head:?}", lengths.len()) };
    assert!(!length.is_empty() && length.iter().all(u8::is_ascii_digit), "content-length {length:?}");
    assert_eq!(std::str::from_utf8(length).ok().and_then(|l| l.parse().ok()), Some(head.body));
    assert!(head.body <= LIMIT, "{head:?}");
    assert_eq!(head.close, close, "{head:?}");
    assert_eq!(head.authorization.as_deref().map(<[u8]>::trim_ascii), authorization.as_deref(), "{head:?}");
});
