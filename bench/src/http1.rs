//! The little of HTTP/1.1 the bench reads by hand: where a message's head
//! ends and a header's value in it. Shared by wserver's producers
//! ([`crate::http_push`]) and the floor server's listeners.

/// Where the head in `buf` ends (after its blank line), once it is whole.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// The trimmed value of header `name` (any case) in `head`, the request or
/// status line first.
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_head() {
        let text = b"POST /push HTTP/1.1\r\nContent-Length: 12\r\nconnection: close\r\n\r\nbody";
        let end = head_end(text).expect("a whole head");
        assert_eq!(&text[end..], b"body");
        let head = std::str::from_utf8(&text[..end]).expect("text");
        assert_eq!(header(head, "content-length"), Some("12"));
        assert_eq!(header(head, "Connection"), Some("close"));
        assert_eq!(header(head, "upgrade"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
