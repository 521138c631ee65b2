//! `/metrics` as a scraper reads it: an OpenMetrics text parser that fails
//! on any malformed line, and the samples it found.

use std::collections::HashMap;

use super::Gateway;
use super::http::http;

/// `GET /metrics` on the internal port, parsed.
pub async fn scrape(gw: &Gateway) -> Scrape {
    let reply = http(gw, "GET", "/metrics", None, "").await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/openmetrics-text"), "{}", reply.content_type);
    parse_metrics(&reply.body)
}

/// One scrape of `/metrics`, checked line by line as OpenMetrics text.
pub struct Scrape {
    /// `name{label="value",...}` (labels sorted) → value.
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// The value of `name` with exactly `labels`; 0 when the series does not
    /// exist yet (labelled children appear on first use).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples.get(&series_key(name, labels)).copied().unwrap_or(0.0)
    }

    /// The histogram's buckets as (upper bound, cumulative count), ordered.
    pub fn buckets(&self, histogram: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{histogram}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = (self.samples.iter())
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|le| (parse_value(le.trim_end_matches("\"}")), *v)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort();
    if labels.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", labels.join(",")) }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text.parse().unwrap_or_else(|_| panic!("not a number: {text:?}")),
    }
}

/// `{k="v",...}` at the start of `text`: the labels and the rest of the line.
fn parse_labels(text: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    let mut rest = text.strip_prefix('{').expect("labels open with {");
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label without =\": {text}"));
        assert!(is_metric_name(name) && !name.contains(':'), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {text}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {text}"),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The sample names a family of `kind` may have.
fn family_has(family: &str, kind: &str, sample: &str) -> bool {
    let suffix = match sample.strip_prefix(family) {
        Some(suffix) => suffix,
        None => return false,
    };
    match kind {
        "counter" => ["_total", "_created"].contains(&suffix),
        "gauge" | "unknown" => suffix.is_empty(),
        "histogram" => ["_bucket", "_sum", "_count", "_created"].contains(&suffix),
        "info" => suffix == "_info",
        "stateset" => suffix.is_empty(),
        _ => false,
    }
}

/// Parses an OpenMetrics text exposition, failing on any malformed line.
pub fn parse_metrics(body: &str) -> Scrape {
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let mut families: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let lines: Vec<&str> = body.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            assert_eq!(i, lines.len() - 1, "# EOF is the last line");
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, family, rest) = (parts.next(), parts.next(), parts.next());
            let family = family.unwrap_or_else(|| panic!("metadata without a family: {line}"));
            assert!(is_metric_name(family), "family name in {line}");
            match keyword {
                Some("TYPE") => {
                    let kind = rest.unwrap_or_else(|| panic!("TYPE without a type: {line}"));
                    let known = ["counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset"];
                    assert!(known.contains(&kind) || kind == "unknown", "type in {line}");
                    assert!(families.insert(family.to_owned(), kind.to_owned()).is_none(), "one TYPE per family");
                }
                Some("HELP" | "UNIT") => {}
                _ => panic!("unknown metadata line {line}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "line {i}: {line:?}");
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "sample name in {line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields =
            rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line}")).split(' ');
        let value = parse_value(fields.next().expect("value"));
        if let Some(timestamp) = fields.next() {
            parse_value(timestamp);
        }
        assert!(fields.next().is_none(), "trailing fields in {line}");
        assert!(families.iter().any(|(f, kind)| family_has(f, kind, name)), "{name} has no TYPE before it");
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(samples.insert(series_key(name, &labels), value).is_none(), "duplicate series {line}");
    }
    Scrape { samples }
}
