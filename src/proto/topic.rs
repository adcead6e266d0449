//! Topic names and topic filters: validation and the reference matcher.
//!
//! Pure functions, no state, no allocation. Used by the codec to reject malformed
//! PUBLISH/SUBSCRIBE packets and by the route layer, whose `TopicTrie` is checked against
//! [`matches`] in property tests. Spec ids refer to MQTT 3.1.1 §4.7 (MQTT-4.7.x) and MQTT 5.0
//! §4.8.2 (shared subscriptions, MQTT-4.8.2-x).

use thiserror::Error;

/// Longest topic name or filter, in bytes, that fits an MQTT UTF-8 string.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix of a shared subscription filter (`$share/{group}/{filter}`), MQTT 5.0 §4.8.2.
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter was rejected. Every variant is a protocol violation; the
/// message cites the normative statement it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The name or filter is the empty string.
    #[error("[MQTT-4.7.3-1] topic names and filters must be at least one character long")]
    Empty,
    /// The name or filter encodes to more than [`MAX_TOPIC_LEN`] bytes.
    #[error("[MQTT-4.7.3-3] topic is {len} bytes, longer than 65535")]
    TooLong {
        /// Length of the rejected string in bytes.
        len: usize,
    },
    /// The name or filter contains U+0000.
    #[error("[MQTT-4.7.3-2] topic contains the null character U+0000")]
    NullChar,
    /// A topic name (PUBLISH) contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInName,
    /// `#` appears somewhere other than as the whole last level.
    #[error("[MQTT-4.7.1-2] '#' must be the last character and alone in its level")]
    MisplacedHash,
    /// `+` shares its level with other characters.
    #[error("[MQTT-4.7.1-3] '+' must occupy an entire level")]
    MisplacedPlus,
    /// `$share/` is followed by an empty share name.
    #[error("[MQTT-4.8.2-1] shared subscription has an empty share name")]
    EmptyShareName,
    /// The share name contains `+` or `#`.
    #[error("[MQTT-4.8.2-2] share name must not contain '+', '#' or '/'")]
    InvalidShareName,
    /// The share name is not followed by `/` and a non-empty topic filter.
    #[error("[MQTT-4.8.2-2] share name must be followed by '/' and a topic filter")]
    MissingSharedFilter,
    /// Longer than the broker's `max_topic_length` (a configured limit, not a spec rule).
    #[error("topic is {len} bytes, over the configured limit of {max}")]
    OverLengthLimit {
        /// Length of the rejected string in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// More levels than the broker's `max_topic_levels` (a configured limit, not a spec rule).
    #[error("topic has {levels} levels, over the configured limit of {max}")]
    OverLevelLimit {
        /// Levels of the rejected string.
        levels: usize,
        /// The configured limit.
        max: usize,
    },
}

/// Checks a PUBLISH topic name: non-empty, no wildcards, at most 65535 bytes, no U+0000.
pub fn validate_topic_name(s: &str) -> Result<(), TopicError> {
    check_string(s)?;
    if s.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a SUBSCRIBE/UNSUBSCRIBE topic filter, including shared subscriptions
/// (`$share/{group}/{filter}`, whose inner filter follows the ordinary rules).
pub fn validate_topic_filter(s: &str) -> Result<(), TopicError> {
    check_string(s)?;
    match s.strip_prefix(SHARE_PREFIX) {
        Some(rest) => {
            let (group, filter) = match rest.split_once('/') {
                Some(parts) => parts,
                // `$share/g`: no separator after the name (or no name at all).
                None if rest.is_empty() => return Err(TopicError::EmptyShareName),
                None => return Err(TopicError::MissingSharedFilter),
            };
            if group.is_empty() {
                return Err(TopicError::EmptyShareName);
            }
            if group.bytes().any(|b| b == b'+' || b == b'#') {
                return Err(TopicError::InvalidShareName);
            }
            if filter.is_empty() {
                return Err(TopicError::MissingSharedFilter);
            }
            check_filter_levels(filter)
        }
        None => check_filter_levels(s),
    }
}

/// Number of levels of a topic name or filter as matched against topics: `a//b` has three; a
/// shared subscription counts its inner filter only (`$share/g/a/b` has two).
pub fn level_count(s: &str) -> usize {
    let matched = parse_shared(s).map_or(s, |(_, inner)| inner);
    matched.bytes().filter(|&b| b == b'/').count() + 1
}

/// Checks a topic name or filter against the broker's configured limits (not the protocol's):
/// at most `max_len` bytes and `max_levels` levels (see [`level_count`]).
pub fn check_limits(s: &str, max_len: usize, max_levels: usize) -> Result<(), TopicError> {
    if s.len() > max_len {
        return Err(TopicError::OverLengthLimit {
            len: s.len(),
            max: max_len,
        });
    }
    if s.len() < max_levels {
        // At most one level per byte plus one: no need to count (the usual case).
        return Ok(());
    }
    let levels = level_count(s);
    if levels > max_levels {
        return Err(TopicError::OverLevelLimit {
            levels,
            max: max_levels,
        });
    }
    Ok(())
}

/// Splits a validated shared subscription filter into `(group, filter)`.
///
/// Returns `None` for anything that is not a well-formed `$share/{group}/{filter}`, so it is
/// also safe on unvalidated input.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let (group, inner) = filter.strip_prefix(SHARE_PREFIX)?.split_once('/')?;
    if group.is_empty() || inner.is_empty() {
        return None;
    }
    Some((group, inner))
}

/// Reference matcher: does `filter` match the topic name `topic`?
///
/// Deliberately naive (split on '/', walk both in step) so that property tests can hold the
/// trie against it. Rules: `+` matches exactly one level, `#` matches the rest of the topic
/// including the parent level (`sport/#` matches `sport`) [MQTT-4.7.1-2], empty levels are
/// real levels (`a//b` has three), and a topic starting with `$` never matches a filter whose
/// first level is `+` or `#` [MQTT-4.7.2-1]. A `$share/...` filter is matched literally; the
/// caller strips the share prefix with [`parse_shared`] first.
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    if topic.starts_with('$') && matches!(filter.split('/').next(), Some("+" | "#")) {
        return false;
    }
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Rules shared by names and filters: [MQTT-4.7.3-1], [MQTT-4.7.3-2], [MQTT-4.7.3-3].
fn check_string(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    if s.bytes().any(|b| b == 0) {
        return Err(TopicError::NullChar);
    }
    Ok(())
}

/// Wildcard placement in a (non-shared) filter: [MQTT-4.7.1-2], [MQTT-4.7.1-3].
fn check_filter_levels(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedHash);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedPlus);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_rejected() {
        // MQTT-4.7.3-1
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn null_char_is_rejected() {
        // MQTT-4.7.3-2
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullChar));
        assert_eq!(validate_topic_filter("a/\0/#"), Err(TopicError::NullChar));
    }

    #[test]
    fn length_limit_is_65535_bytes() {
        // MQTT-4.7.3-3
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        let err = Err(TopicError::TooLong {
            len: MAX_TOPIC_LEN + 1,
        });
        assert_eq!(validate_topic_name(&over), err);
        assert_eq!(validate_topic_filter(&over), err);
        // Bytes, not chars: 'é' is two bytes.
        let multibyte = "é".repeat(MAX_TOPIC_LEN / 2 + 1);
        assert!(matches!(
            validate_topic_name(&multibyte),
            Err(TopicError::TooLong { .. })
        ));
    }

    #[test]
    fn topic_name_has_no_wildcards() {
        // MQTT-3.3.2-2
        for bad in ["+", "#", "a/+", "a/#", "sport+", "a/b#c"] {
            assert_eq!(
                validate_topic_name(bad),
                Err(TopicError::WildcardInName),
                "{bad}"
            );
        }
        for good in [
            "a",
            "/",
            "//",
            "a//b",
            "$SYS/broker",
            "sport/tennis/player1",
            " ",
        ] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn hash_is_last_and_alone() {
        // MQTT-4.7.1-2, examples from §4.7.1.2
        for good in ["#", "sport/#", "sport/tennis/#", "/#", "+/#", "a//#"] {
            assert_eq!(validate_topic_filter(good), Ok(()), "{good}");
        }
        for bad in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/",
            "a#",
            "#a/b",
            "##",
        ] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::MisplacedHash),
                "{bad}"
            );
        }
    }

    #[test]
    fn plus_is_alone_in_its_level() {
        // MQTT-4.7.1-3, examples from §4.7.1.3
        for good in ["+", "+/tennis/#", "sport/+/player1", "/+", "+/+", "a/+/"] {
            assert_eq!(validate_topic_filter(good), Ok(()), "{good}");
        }
        for bad in ["sport+", "sport/+a", "++", "a/b+/c"] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::MisplacedPlus),
                "{bad}"
            );
        }
    }

    #[test]
    fn shared_subscriptions() {
        // MQTT-4.8.2-1, MQTT-4.8.2-2
        assert_eq!(validate_topic_filter("$share/g/a/+/#"), Ok(()));
        assert_eq!(validate_topic_filter("$share/g/#"), Ok(()));
        assert_eq!(
            validate_topic_filter("$share/"),
            Err(TopicError::EmptyShareName)
        );
        assert_eq!(
            validate_topic_filter("$share//a"),
            Err(TopicError::EmptyShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            validate_topic_filter("$share/g/"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            validate_topic_filter("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/g/a#"),
            Err(TopicError::MisplacedHash)
        );
        assert_eq!(
            validate_topic_filter("$share/g/a+"),
            Err(TopicError::MisplacedPlus)
        );
        // Not shared: "$share" without the slash is an ordinary level.
        assert_eq!(validate_topic_filter("$share"), Ok(()));
        assert_eq!(validate_topic_filter("$sharegroup/a"), Ok(()));
    }

    #[test]
    fn parse_shared_splits_group_and_filter() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(parse_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(parse_shared("$share/g/"), None);
        assert_eq!(parse_shared("$share//a"), None);
        assert_eq!(parse_shared("$share/g"), None);
        assert_eq!(parse_shared("a/b"), None);
    }

    #[test]
    fn spec_4_7_1_2_multi_level_wildcard() {
        // MQTT-4.7.1-2: "sport/tennis/player1/#" examples
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        // "sport/#" also matches the singular "sport", since # includes the parent level.
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("#", "sport/tennis"));
        assert!(!matches("sport/#", "sports"));
    }

    #[test]
    fn spec_4_7_1_3_single_level_wildcard() {
        // MQTT-4.7.1-3 examples
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/+/+", "//"));
        assert!(!matches("+/+", "//"));
        assert!(matches("/", "/"));
        assert!(!matches("/", ""));
    }

    #[test]
    fn dollar_topics_never_match_leading_wildcards() {
        // MQTT-4.7.2-1, examples from §4.7.2
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(!matches("+", "$SYS"));
        // Only a leading '$' is special.
        assert!(matches("+/+", "a/$b"));
        assert!(matches("#", "a/$b"));
    }

    proptest::proptest! {
        /// No input panics, and the functions agree with each other.
        #[test]
        fn total_and_consistent(s in "[a$/+#\\x00é]{0,12}", t in "[a$/]{0,8}") {
            let name_ok = validate_topic_name(&s).is_ok();
            let filter_ok = validate_topic_filter(&s).is_ok();
            let _ = matches(&s, &t);
            let _ = parse_shared(&s);
            // Every valid name is a valid filter and matches itself.
            if name_ok {
                proptest::prop_assert!(filter_ok);
                proptest::prop_assert!(matches(&s, &s));
            }
            // A valid wildcard-free filter matches exactly the equal topic.
            if filter_ok && !s.contains(['+', '#']) && validate_topic_name(&t).is_ok() {
                proptest::prop_assert_eq!(matches(&s, &t), s == t);
            }
            if filter_ok && s.starts_with(SHARE_PREFIX) {
                let (_, inner) = parse_shared(&s).expect("validated shared filter parses");
                proptest::prop_assert!(validate_topic_filter(inner).is_ok());
            }
        }
    }

    #[test]
    fn literal_levels_compare_exactly() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("A/b", "a/b"));
    }

    #[test]
    fn levels_count_empty_ones_and_only_the_inner_filter_of_a_share() {
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count("a//b"), 3);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("$share/g/a/b"), 2);
        assert_eq!(
            level_count("$share/g"),
            2,
            "not a valid share: counted as written"
        );
    }

    #[test]
    fn configured_limits_are_inclusive() {
        assert_eq!(check_limits("ab/cd", 5, 2), Ok(()));
        assert_eq!(
            check_limits("ab/cde", 5, 2),
            Err(TopicError::OverLengthLimit { len: 6, max: 5 })
        );
        assert_eq!(
            check_limits("a/b/c", 5, 2),
            Err(TopicError::OverLevelLimit { levels: 3, max: 2 })
        );
    }
}
