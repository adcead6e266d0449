//! Helpers for the ops endpoint tests: find the endpoint's address in the broker log, make
//! HTTP/1.1 requests over a plain TCP socket, and parse (and check) a Prometheus text
//! exposition.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Broker;

/// The ops endpoint's address, from the broker's `ops endpoint listening on http://ADDR`
/// log line (waits up to 5 s for it).
pub fn ops_addr(b: &Broker) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = b.log();
        if let Some(i) = log.find("ops endpoint listening on http://") {
            let rest = &log[i + "ops endpoint listening on http://".len()..];
            let addr = rest.split_whitespace().next().unwrap_or_default();
            return addr.parse().expect("ops address");
        }
        assert!(Instant::now() < deadline, "no ops endpoint line in the log");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `request` as is and read the whole response (the server closes); returns the
/// status code, the head and the body.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the ops endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).expect("send request");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8(resp).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// GET `path`; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    let (status, _, body) = http_raw(addr, req.as_bytes());
    (status, body)
}

/// A parsed exposition: every sample by `name{labels}` exactly as written (no labels:
/// just the name), and each family's type.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: HashMap<String, f64>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// A sample's value; panics if absent.
    pub fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}"))
    }

    /// Sum of the samples of family `name` whose labels contain `filter`.
    pub fn sum(&self, name: &str, filter: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                (k.as_str() == name || k.starts_with(&format!("{name}{{"))) && k.contains(filter)
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Check the labels part `k="v",k2="v2"`; returns (name, value) pairs.
fn parse_labels(s: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        assert!(valid_name(k), "bad label name {k:?} in {line:?}");
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("unterminated label in {line:?}"));
        out.push((k.to_string(), after[..end].to_string()));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    out
}

/// Parse the text format 0.0.4 and check it: valid names, `# HELP` and `# TYPE` before a
/// family's samples, each family once and contiguous, sample names belong to the family,
/// counters end in `_total`, histogram buckets cumulative with `+Inf` equal to `_count`.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    let mut helped: Option<String> = None;
    let mut current: Option<(String, String)> = None;
    let mut finished = std::collections::HashSet::new();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let check_hist = |name: &str, buckets: &mut Vec<(f64, f64)>, e: &Exposition| {
        if buckets.is_empty() {
            return;
        }
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0),
            "{name}: buckets not cumulative: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite(), "{name}: no +Inf bucket");
        assert_eq!(
            last.1,
            e.get(&format!("{name}_count")),
            "{name}: +Inf != count"
        );
        buckets.clear();
    };
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in the exposition");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(valid_name(name), "bad name in {line:?}");
            assert!(!finished.contains(name), "{name} described twice");
            helped = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(
                helped.as_deref(),
                Some(name),
                "TYPE {name} without HELP first"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            if let Some((prev, kind)) = current.take() {
                if kind == "histogram" {
                    check_hist(&prev, &mut buckets, &e);
                }
                finished.insert(prev);
            }
            assert!(!finished.contains(name), "{name} typed twice");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} does not end in _total"
                );
            }
            e.types.insert(name.to_string(), kind.to_string());
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(l.strip_suffix('}').expect("closing brace"), line),
            ),
            None => (key, Vec::new()),
        };
        assert!(valid_name(name), "bad sample name in {line:?}");
        let (family, kind) = current
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let belongs = name == family
            || (kind == "histogram"
                && [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .iter()
                .any(|n| n == name));
        assert!(belongs, "sample {name} outside its family {family}");
        if name.ends_with("_bucket") {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .unwrap_or_else(|| panic!("bucket without le: {line:?}"));
            let bound = if le.1 == "+Inf" {
                f64::INFINITY
            } else {
                le.1.parse().expect("le bound")
            };
            buckets.push((bound, v));
        }
        assert!(
            e.samples.insert(key.to_string(), v).is_none(),
            "sample {key} twice"
        );
    }
    if let Some((prev, kind)) = current {
        if kind == "histogram" {
            check_hist(&prev, &mut buckets, &e);
        }
    }
    e
}

/// GET /metrics, check the status and the content type, parse and check the exposition.
pub fn scrape(addr: SocketAddr) -> Exposition {
    let req = "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
    let (status, head, body) = http_raw(addr, req.as_bytes());
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse_exposition(&body)
}

/// Scrape until `done` holds for the exposition (at most 5 s); returns it.
pub fn scrape_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let e = scrape(addr);
        if done(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
