//! The pure parts of the internal HTTP routes, for the fuzz targets in
//! `fuzz/` (re-exported as `pushgate::fuzzing`). Not an API.

use crate::core::Push;

/// The push a wserver `POST /push` body asks for, or `None` when it is
/// answered 400 `request data illegal` before reaching the hub.
pub fn wserver_body(body: &[u8]) -> Option<Push> {
    super::wserver::parse(body)
}

/// A wserver push the internal listener serves without hyper, as it read
/// its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushHead {
    /// The head's length: the body follows.
    pub len: usize,
    /// The body's length (`content-length`).
    pub body: usize,
    /// `connection: close`.
    pub close: bool,
    /// The first `authorization` header's value.
    pub authorization: Option<Vec<u8>>,
}

/// What the internal listener makes of `bytes` as the start of a request:
/// `Some` for a `POST /push` it serves itself with bodies up to `limit`
/// bytes, `None` when the head is not whole yet or goes to hyper.
pub fn push_head(bytes: &[u8], limit: usize) -> Option<PushHead> {
    let super::http1::Start::Push(head) = super::http1::start(bytes, limit) else { return None };
    let authorization = head.authorization.map(|(from, to)| bytes[from..to].to_vec());
    Some(PushHead { len: head.len, body: head.body, close: head.close, authorization })
}
