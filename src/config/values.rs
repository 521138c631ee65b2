//! Parsers for the value syntaxes of flags and the file: durations and sizes.

use std::time::Duration;

use serde::Deserialize;

use crate::core::SlowPolicy;

/// Parses `250ms`, `10s`, `5m`, `1h`, `30d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration such as 250ms, 10s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too long a duration"))
}

/// Parses a byte size: `1048576`, `512KiB`, `64MiB`, `2GiB` (also KB/MB/GB
/// as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size such as 512MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{s}`: unknown unit `{other}` (KiB, MiB, GiB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses `close` or `drop-oldest`.
pub fn parse_slow_policy(s: &str) -> Result<SlowPolicy, String> {
    match s {
        "close" => Ok(SlowPolicy::Close),
        "drop-oldest" => Ok(SlowPolicy::DropOldest),
        _ => Err(format!("`{s}`: expected close or drop-oldest")),
    }
}

pub(super) fn de_slow_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SlowPolicy>, D::Error> {
    let s = String::deserialize(d)?;
    parse_slow_policy(&s).map(Some).map_err(serde::de::Error::custom)
}

pub(super) fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(Some(n)),
        Size::Text(s) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

pub(super) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5x").is_err());
        for absurd in ["99999999999999999999h", "99999999999999999999999s", "1e400", "1".repeat(400).as_str()] {
            assert!(parse_duration(absurd).is_err(), "{absurd}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("18446744073709551615GiB").is_err());
        assert!(parse_size("99999999999999999999999").is_err());
    }
}
