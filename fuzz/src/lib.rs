//! Oracles shared by the fuzz targets: independent statements of what
//! docs/protocol.md and docs/api.md promise, written without the gateway's
//! own code so a target compares two readings of the contract.

/// The codes of the envelope `error` message a refused client message gets
/// (docs/protocol.md, "Envelope mode").
pub const CLIENT_ERROR_CODES: [&str; 4] = ["bad_json", "bad_request", "bad_event", "unknown_type"];

/// The event-name grammar: 1–128 bytes of `[A-Za-z0-9_.:-]`.
pub fn is_event_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b':' || b == b'-')
}

/// Decodes standard base64 with padding (RFC 4648 §4), refusing any
/// non-canonical form (stray bits in the last character).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i + 1 == b.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // Canonical: the bits past the last kept byte are zero.
        if pad > 0 && n & ((1 << (8 * pad)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` value decoding: `%XX` and `+`;
/// `None` for a bad escape or a result that is not UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("dGhlIHNhbXBsZSBub25jZQ==").as_deref(), Some(&b"the sample nonce"[..]));
        assert_eq!(base64_decode("dGhlIHNhbXBsZSBub25jZR=="), None, "stray bits");
        assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(base64_decode("Zg=="), Some(b"f".to_vec()));
        assert_eq!(base64_decode("Zh=="), None);
        assert_eq!(base64_decode("Z==="), None);
    }
}

/// The lines of an HTTP/1.1 head (RFC 9112 §2.2), each without its CRLF or
/// LF, read from the start of `data`.
pub struct Lines<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Lines<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    /// The request line, past any empty lines before it.
    pub fn request_line(&mut self) -> &'a [u8] {
        loop {
            let line = self.next().expect("a request line");
            if !line.is_empty() {
                return line;
            }
        }
    }

    /// The next header line as its name and value (without the blank space
    /// around the value); `None` at the empty line that ends the head.
    pub fn header(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let line = self.next().expect("the head ends with an empty line");
        if line.is_empty() {
            return None;
        }
        let colon = line.iter().position(|&b| b == b':').expect("a header line has a colon");
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        assert!(!name.is_empty() && !name.iter().any(|b| b.is_ascii_whitespace()), "{line:?}");
        Some((name, value))
    }

    /// How many bytes the lines read so far took, line ends included.
    pub fn read(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|&b| b == b'\n')?;
        self.at += end + 1;
        Some(rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]))
    }
}
