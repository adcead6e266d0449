use super::*;
use crate::proto::topic::{matches as filter_matches, validate_topic_filter};

const ALICE: Who<'static> = Who {
    user: Some("alice"),
    client: "dev1",
};
const ANON: Who<'static> = Who {
    user: None,
    client: "dev1",
};

fn p(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

#[test]
fn parse_rejects_bad_patterns() {
    assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
    assert_eq!(Pattern::parse("a/#/b"), Err(PatternError::MisplacedHash));
    assert_eq!(Pattern::parse("a#"), Err(PatternError::MisplacedHash));
    assert_eq!(Pattern::parse("a/b+"), Err(PatternError::MisplacedPlus));
    assert_eq!(Pattern::parse("a/%x"), Err(PatternError::BadEscape));
    assert_eq!(Pattern::parse("a/%"), Err(PatternError::BadEscape));
    assert_eq!(Pattern::parse("a\0"), Err(PatternError::NullChar));
    assert_eq!(Pattern::parse("$share/g/a"), Err(PatternError::Shared));
    assert_eq!(
        Pattern::parse(&"a".repeat(70_000)),
        Err(PatternError::TooLong)
    );
    assert!(Pattern::parse("100%%/x").unwrap().matches("100%/x", &ALICE));
}

#[test]
fn literal_and_wildcards() {
    assert!(p("a/b").matches("a/b", &ANON));
    assert!(!p("a/b").matches("a/b/c", &ANON));
    assert!(p("a/+").matches("a/b", &ANON));
    assert!(!p("a/+").matches("a", &ANON));
    assert!(p("a/#").matches("a", &ANON), "[MQTT-4.7.1-2] parent level");
    assert!(p("a/#").matches("a/b/c", &ANON));
    assert!(p("#").matches("x/y", &ANON));
}

#[test]
fn dollar_topics_need_a_literal_first_level() {
    // [MQTT-4.7.2-1]
    assert!(!p("#").matches("$SYS/uptime", &ALICE));
    assert!(!p("+/uptime").matches("$SYS/uptime", &ALICE));
    assert!(p("$SYS/#").matches("$SYS/uptime", &ALICE));
    assert!(!p("#").covers("$SYS/#", &ALICE));
    assert!(p("$SYS/#").covers("$SYS/#", &ALICE));
    // A client id of "$SYS" does not open `$SYS` through `%c/#`.
    let sys = Who::new(Some("$SYS"), "$SYS");
    assert!(!p("%c/#").matches("$SYS/x", &sys));
    assert!(!p("%u/#").covers("$SYS/#", &sys));
    assert!(p("$dev-%c/#").matches("$dev-$SYS/x", &sys));
}

#[test]
fn substitution_whole_and_inside_levels() {
    let pat = p("users/%u/+/dev-%c");
    assert!(pat.matches("users/alice/x/dev-dev1", &ALICE));
    assert!(!pat.matches("users/bob/x/dev-dev1", &ALICE));
    assert!(!pat.matches("users/alice/x/dev-dev2", &ALICE));
    assert!(!pat.matches("users/alice/x/dev-dev1x", &ALICE));
    assert!(p("%c").matches("dev1", &ALICE));
}

#[test]
fn user_patterns_never_match_anonymous() {
    assert!(!p("users/%u/#").matches("users//x", &ANON));
    assert!(!p("users/%u/#").covers("users/+/#", &ANON));
    assert!(!p("users/%u/#").overlaps("#", &ANON));
    // Without %u, an anonymous client can match.
    assert!(p("clients/%c/#").matches("clients/dev1/x", &ANON));
}

#[test]
fn values_that_would_change_the_pattern_match_nothing() {
    for bad in ["+", "#", "a/b", ""] {
        let who = Who::new(Some(bad), bad);
        assert!(!p("u/%u/#").matches("u/a/b/c", &who), "{bad:?}");
        assert!(!p("c/%c/#").matches("c/a/b/c", &who), "{bad:?}");
        assert!(!p("c/%c/#").covers("c/+/#", &who), "{bad:?}");
        assert!(!p("c/%c/#").covers("c/#", &who), "{bad:?}");
    }
}

#[test]
fn coverage() {
    assert!(p("a/#").covers("a/#", &ANON));
    assert!(p("a/#").covers("a", &ANON));
    assert!(p("a/#").covers("a/+/b", &ANON));
    assert!(!p("a/+").covers("a/#", &ANON), "a/# reaches a and a/b/c");
    assert!(p("a/+").covers("a/+", &ANON));
    assert!(!p("a/b").covers("a/+", &ANON));
    assert!(!p("a").covers("a/#", &ANON));
    assert!(p("+/#").covers("+", &ANON));
    assert!(p("devices/%c/#").covers("devices/dev1/+", &ALICE));
    assert!(!p("devices/%c/#").covers("devices/+/x", &ALICE));
}

#[test]
fn plus_hash_covers_a_hash_whose_parent_is_no_topic() {
    // `#` matches every topic; `+/#` too (a topic has at least one level).
    assert!(p("+/#").covers("#", &ANON));
    // `/#` reaches "/..." and the empty name, which is no topic [MQTT-4.7.3-1].
    assert!(p("/+/#").covers("/#", &ANON));
    // `a/#` reaches "a", which `a/+/#` does not.
    assert!(!p("a/+/#").covers("a/#", &ANON));
    assert!(!p("+/+/#").covers("+/#", &ANON));
    assert!(!p("+").covers("#", &ANON));
    assert!(!p("+/a").covers("#", &ANON));
}

#[test]
fn overlap() {
    assert!(p("secret/#").overlaps("#", &ANON));
    assert!(p("a/+").overlaps("a/#", &ANON));
    assert!(p("a/b").overlaps("+/b", &ANON));
    assert!(!p("a/b").overlaps("a/c", &ANON));
    assert!(p("a/#").overlaps("a", &ANON));
    assert!(p("a").overlaps("a/#", &ANON));
    assert!(!p("$SYS/#").overlaps("#", &ANON));
    assert!(!p("#").overlaps("$SYS/x", &ANON));
}

// ---- model-based: brute force over a small topic space ------------------------------

/// Reference: substitute as text, then use the reference topic matcher.
fn model(pattern: &str, topic: &str, who: &Who<'_>) -> bool {
    if pattern.contains("%u") && who.user.is_none() {
        return false;
    }
    let user = who.user.unwrap_or("");
    for (tag, v) in [("%u", user), ("%c", who.client)] {
        if pattern.contains(tag) && (v.is_empty() || v.contains(['/', '+', '#'])) {
            return false;
        }
    }
    if pattern.starts_with('%') && topic.starts_with('$') {
        return false;
    }
    let text = pattern.replace("%u", user).replace("%c", who.client);
    filter_matches(&text, topic)
}

const TOPIC_LEVELS: &[&str] = &["a", "u", "c", "$a", "", "d-u", "z"];

fn topics() -> Vec<String> {
    let mut out: Vec<String> = TOPIC_LEVELS.iter().map(|s| s.to_string()).collect();
    let mut last = out.clone();
    for _ in 1..4 {
        let next: Vec<String> = last
            .iter()
            .flat_map(|t| TOPIC_LEVELS.iter().map(move |l| format!("{t}/{l}")))
            .collect();
        out.extend(next.iter().cloned());
        last = next;
    }
    // Topic names are non-empty [MQTT-4.7.3-1].
    out.retain(|t| !t.is_empty());
    out
}

fn level(choices: &'static [&'static str]) -> impl proptest::strategy::Strategy<Value = String> {
    proptest::sample::select(choices).prop_map(str::to_string)
}

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]
    #[test]
    fn covers_and_overlaps_agree_with_brute_force(
        pl in proptest::collection::vec(level(&["a", "u", "+", "#", "%u", "%c", "$a", "", "d-%u"]), 1..4),
        fl in proptest::collection::vec(level(&["a", "u", "c", "+", "#", "$a", "", "d-u"]), 1..4),
        who in proptest::sample::select(vec![
            (Some("u"), "c"), (None, "c"), (Some("u"), "$a"), (Some("a/b"), "+"), (Some("u"), "u"),
        ]),
    ) {
        let (pattern, filter) = (pl.join("/"), fl.join("/"));
        let Ok(pat) = Pattern::parse(&pattern) else { return Ok(()) };
        prop_assume!(validate_topic_filter(&filter).is_ok());
        let who = Who::new(who.0, who.1);
        let all = topics();
        let mut covered = true;
        let mut overlap = false;
        for t in &all {
            let m = model(&pattern, t, &who);
            prop_assert_eq!(pat.matches(t, &who), m, "matches({}, {})", pattern, t);
            if filter_matches(&filter, t) {
                covered &= m;
                overlap |= m;
            }
        }
        prop_assert_eq!(pat.covers(&filter, &who), covered, "covers({}, {})", pattern, filter);
        if overlap {
            prop_assert!(pat.overlaps(&filter, &who), "overlaps({}, {})", pattern, filter);
        }
    }
}

#[test]
fn deep_topics_take_the_slow_path_with_the_same_answers() {
    // Past FAST_LEVELS levels, the topic is split again per pattern.
    for depth in [
        FAST_LEVELS - 1,
        FAST_LEVELS,
        FAST_LEVELS + 1,
        FAST_LEVELS + 5,
    ] {
        let topic = vec!["x"; depth].join("/");
        assert!(p("x/#").matches(&topic, &ANON), "{depth}");
        assert!(p(&topic).matches(&topic, &ANON), "{depth}");
        let plus = vec!["+"; depth].join("/");
        assert!(p(&plus).matches(&topic, &ANON), "{depth}");
        assert!(p(&plus).covers(&plus, &ANON), "{depth}");
        assert!(!p(&plus).matches(&format!("{topic}/x"), &ANON), "{depth}");
        assert!(!p(&plus).covers(&format!("{plus}/#"), &ANON), "{depth}");
        assert!(p("x/#").covers(&format!("{plus}/#").replacen('+', "x", 1), &ANON));
    }
}
