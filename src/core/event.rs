//! Event names: 1–128 bytes of `[A-Za-z0-9_.:-]` (docs/protocol.md,
//! "Client messages").

use std::sync::Arc;

/// Longest event name accepted, in bytes.
pub const MAX_EVENT_LEN: usize = 128;

/// A validated event name, shared by reference count (cloning costs one
/// atomic increment).
pub type EventName = Arc<str>;

/// Why a string is not an event name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Empty.
    #[error("event name is empty")]
    Empty,
    /// Over 128 bytes.
    #[error("event name is longer than {MAX_EVENT_LEN} bytes")]
    TooLong,
    /// A byte outside `[A-Za-z0-9_.:-]`.
    #[error("event name may only contain A-Z a-z 0-9 _ . : -")]
    BadChar,
}

/// Checks `name` against the event-name grammar.
pub fn validate_event(name: &str) -> Result<(), EventError> {
    if name.is_empty() {
        return Err(EventError::Empty);
    }
    if name.len() > MAX_EVENT_LEN {
        return Err(EventError::TooLong);
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    if name.bytes().all(ok) { Ok(()) } else { Err(EventError::BadChar) }
}

/// Validates and interns `name` as an [`EventName`].
pub fn event_name(name: &str) -> Result<EventName, EventError> {
    validate_event(name)?;
    Ok(Arc::from(name))
}

/// Validates and interns every name of `names`; the first bad one fails all.
pub fn event_names<S: AsRef<str>>(names: &[S]) -> Result<Vec<EventName>, EventError> {
    names.iter().map(|n| event_name(n.as_ref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert!(validate_event("chat.message:v1-x_y").is_ok());
        assert_eq!(validate_event(""), Err(EventError::Empty));
        assert_eq!(validate_event("a b"), Err(EventError::BadChar));
        assert_eq!(validate_event("é"), Err(EventError::BadChar));
        assert!(validate_event(&"a".repeat(128)).is_ok());
        assert_eq!(validate_event(&"a".repeat(129)), Err(EventError::TooLong));
    }
}
