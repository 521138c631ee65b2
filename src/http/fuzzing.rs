//! The pure parts of the internal HTTP routes, for the fuzz targets in
//! `fuzz/` (re-exported as `pushgate::fuzzing`). Not an API.

use crate::core::Push;

/// The push a wserver `POST /push` body asks for, or `None` when it is
/// answered 400 `request data illegal` before reaching the hub.
pub fn wserver_body(body: &[u8]) -> Option<Push> {
    super::wserver::parse(body)
}
