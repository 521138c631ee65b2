//! The `Origin` check of the handshake (docs/protocol.md, "Handshake").

/// True when a browser from `origin` may connect, given `allowed`
/// (`--allowed-origins`). Each entry is:
/// - `*`: any origin;
/// - `*.example.com`: any origin whose host is a subdomain of `example.com`
///   (any scheme and port; `example.com` itself needs its own entry);
/// - `https://*.example.com`: the same, with that scheme only;
/// - anything else: one exact origin such as `https://app.example.com:8443`.
///
/// Comparisons ignore ASCII case. An empty list allows every origin. A request
/// without an `Origin` header does not come from a browser (browsers always
/// send it on WebSocket upgrades), so it is not subject to the check.
pub(super) fn allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    if allowed.is_empty() {
        return true;
    }
    let origin = origin.trim().trim_end_matches('/');
    allowed.iter().any(|entry| matches(entry.trim().trim_end_matches('/'), origin))
}

fn matches(entry: &str, origin: &str) -> bool {
    if entry == "*" {
        return true;
    }
    let (entry_scheme, entry_host) = split_scheme(entry);
    let Some(suffix) = entry_host.strip_prefix("*.") else {
        return entry.eq_ignore_ascii_case(origin);
    };
    // Only a serialized origin, `scheme://host[:port]` (RFC 6454), has a host
    // to compare: not a value with a path, query, user info or no scheme.
    let Some((scheme, host)) = serialized(origin) else { return false };
    if entry_scheme.is_some_and(|s| !s.eq_ignore_ascii_case(scheme)) {
        return false;
    }
    // `host` must be `<at least one byte>.<suffix>`.
    let Some(split) = host.len().checked_sub(suffix.len()).filter(|&at| at >= 2) else { return false };
    host.as_bytes()[split - 1] == b'.' && host.get(split..).is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

/// `("https", "app.example.com:8443")` from `https://app.example.com:8443`.
fn split_scheme(s: &str) -> (Option<&str>, &str) {
    match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, s),
    }
}

/// `(scheme, host)` of `scheme://host[:port]`, where the host is a name of
/// letters, digits, `-` and `.`, or a bracketed IPv6 address; `None` for any
/// other shape.
fn serialized(origin: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme_ok = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let end = v6.find(']')?;
            let ok = v6[..end].bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            (ok.then_some(&rest[..end + 2])?, &rest[end + 2..])
        }
        None => rest.split_at(rest.find(':').unwrap_or(rest.len())),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') || host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')));
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (scheme_ok && host_ok && port_ok).then_some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_list_and_missing_origin_pass() {
        assert!(allowed(&[], Some("https://evil.test")));
        assert!(allowed(&list(&["https://a.test"]), None));
    }

    #[test]
    fn exact_entries() {
        let l = list(&["https://app.example.com", "http://localhost:3000/"]);
        assert!(allowed(&l, Some("https://app.example.com")));
        assert!(allowed(&l, Some("HTTPS://APP.example.com")));
        assert!(allowed(&l, Some("http://localhost:3000")));
        assert!(!allowed(&l, Some("http://app.example.com")));
        assert!(!allowed(&l, Some("https://app.example.com.evil.test")));
        assert!(!allowed(&l, Some("null")));
    }

    #[test]
    fn wildcard_entries() {
        let l = list(&["*.example.com"]);
        assert!(allowed(&l, Some("https://app.example.com")));
        assert!(allowed(&l, Some("http://a.b.example.com:8080")));
        assert!(!allowed(&l, Some("https://example.com")));
        assert!(!allowed(&l, Some("https://evilexample.com")));
        assert!(!allowed(&l, Some("https://example.com.evil.test")));
        let l = list(&["https://*.example.com"]);
        assert!(allowed(&l, Some("https://app.example.com")));
        assert!(!allowed(&l, Some("http://app.example.com")));
    }

    #[test]
    fn wildcards_match_only_the_host_of_a_serialized_origin() {
        let l = list(&["*.example.com"]);
        assert!(!allowed(&l, Some("https://[::1]:8443")));
        assert!(allowed(&l, Some("http://app.example.com:8080/")));
        for odd in [
            "https://evil.test?.example.com",
            "https://evil.test#.example.com",
            "https://evil.test/x.example.com",
            "https://user@evil.test:1@a.example.com",
            "app.example.com",
            "https://app.example.com:80x",
            "https://app.example.com/path",
        ] {
            assert!(!allowed(&l, Some(odd)), "{odd}");
        }
    }
}
