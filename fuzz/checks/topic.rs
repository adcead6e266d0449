//! The properties of topic name / filter validation and matching (`ringmq::proto::topic`) on
//! any input, held against a second, independently written statement of the rules. Shared,
//! through a `#[path]` include, by the cargo-fuzz target `topic` and by `tests/fuzz_corpus.rs`.
//!
//! Input layout: byte 0 and 1 are the length and level limits for `check_limits`
//! (`b * 8 + 1` bytes, `b / 4 + 1` levels); the rest, as lossy UTF-8, is split at the first
//! `\n` into a string `a` checked as both a name and a filter, and a topic `b`
//! matched against `a` when both are valid.

use ringmq::proto::topic::{
    check_limits, level_count, matches, parse_shared, validate_topic_filter, validate_topic_name,
    MAX_TOPIC_LEN, SHARE_PREFIX,
};

/// Check every property on `data` (see the module docs for its layout).
pub fn check(data: &[u8]) -> Result<(), String> {
    let [len_b, levels_b, rest @ ..] = data else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(rest);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    for s in [a, b] {
        let name = validate_topic_name(s);
        if name.is_ok() != name_ok(s) {
            return Err(format!(
                "[name-rules] {s:?}: validate_topic_name says {name:?}"
            ));
        }
        let filter = validate_topic_filter(s);
        if filter.is_ok() != filter_ok(s) {
            return Err(format!(
                "[filter-rules] {s:?}: validate_topic_filter says {filter:?}"
            ));
        }
        let (max_len, max_levels) = (usize::from(*len_b) * 8 + 1, usize::from(*levels_b) / 4 + 1);
        let levels = levels_of(s);
        if level_count(s) != levels {
            return Err(format!(
                "[levels] {s:?}: level_count {}, expected {levels}",
                level_count(s)
            ));
        }
        let within = s.len() <= max_len && levels <= max_levels;
        let limits = check_limits(s, max_len, max_levels);
        if limits.is_ok() != within {
            return Err(format!(
                "[limits] {s:?} ({} bytes, {levels} levels) against {max_len}/{max_levels}: {limits:?}",
                s.len()
            ));
        }
    }
    if filter_ok(a) && name_ok(b) && !a.starts_with(SHARE_PREFIX) {
        let want = matches_ref(&split(a), &split(b)) && !(b.starts_with('$') && wild_first(a));
        if matches(a, b) != want {
            return Err(format!("[matches] {a:?} on {b:?}: matches says {}", !want));
        }
    }
    Ok(())
}

fn split(s: &str) -> Vec<&str> {
    s.split('/').collect()
}

/// Non-empty, at most 65535 bytes, no U+0000 [MQTT-4.7.3-1..3].
fn string_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TOPIC_LEN && !s.contains('\0')
}

/// A name has no wildcard characters at all [MQTT-3.3.2-2].
fn name_ok(s: &str) -> bool {
    string_ok(s) && !s.contains(['+', '#'])
}

/// Every level is either free of wildcards, or exactly `+`, or exactly `#` as the last level
/// [MQTT-4.7.1-2, -3]; a shared filter is `$share/`, a non-empty name without wildcards or
/// '/', '/', and a non-empty filter obeying the same rules [MQTT-4.8.2-1, -2].
fn filter_ok(s: &str) -> bool {
    if !string_ok(s) {
        return false;
    }
    let levels_ok = |f: &str| {
        let l = split(f);
        l.iter().enumerate().all(|(i, lv)| {
            !lv.contains(['+', '#']) || *lv == "+" || (*lv == "#" && i == l.len() - 1)
        })
    };
    match s.strip_prefix(SHARE_PREFIX) {
        None => levels_ok(s),
        Some(rest) => {
            let Some(slash) = rest.find('/') else {
                return false;
            };
            let (group, inner) = (&rest[..slash], &rest[slash + 1..]);
            !group.is_empty()
                && !group.contains(['+', '#'])
                && !inner.is_empty()
                && levels_ok(inner)
        }
    }
}

/// Levels as matched: a shared filter's inner filter only.
fn levels_of(s: &str) -> usize {
    let inner = parse_shared(s).map_or(s, |(_, f)| f);
    split(inner).len()
}

fn wild_first(filter: &str) -> bool {
    matches!(split(filter).first(), Some(&"+") | Some(&"#"))
}

/// Recursive matcher over levels: `#` takes the rest (parent level included), `+` one level.
fn matches_ref(f: &[&str], t: &[&str]) -> bool {
    match (f.first(), t.first()) {
        (Some(&"#"), _) => f.len() == 1,
        (Some(&"+"), Some(_)) => matches_ref(&f[1..], &t[1..]),
        (Some(fl), Some(tl)) => fl == tl && matches_ref(&f[1..], &t[1..]),
        (None, None) => true,
        _ => false,
    }
}
