use super::*;

const FILE: &str = "\
# example
default deny

all
allow read public/#
deny read secret/#
allow read #
allow readwrite users/%u/#
allow write devices/%c/state

anonymous
allow write anon/in

user alice
deny write public/alice-blocked
allow write public/#

client special
allow readwrite $SYS/#
";

fn acl() -> Acl {
    Acl::parse(FILE).unwrap()
}

#[test]
fn parses_the_documented_format() {
    let a = acl();
    assert_eq!(a.rules(), 9);
    assert!(!a.default_allow());
    assert!(a.summary().contains("9 rules"));
}

#[test]
fn sections_in_decision_order() {
    let a = acl();
    let alice = Who::new(Some("alice"), "c1");
    let bob = Who::new(Some("bob"), "c2");
    let anon = Who::new(None, "c3");
    // user section before all.
    assert!(a.can_write(&alice, "public/x"));
    assert!(
        !a.can_write(&alice, "public/alice-blocked"),
        "first match wins"
    );
    assert!(!a.can_write(&bob, "public/x"), "default deny");
    // anonymous section only for clients without a user name.
    assert!(a.can_write(&anon, "anon/in"));
    assert!(!a.can_write(&alice, "anon/in"));
    // all applies to anonymous clients too.
    assert!(a.can_read(&anon, "public/x"));
    assert!(a.can_read(&anon, "other"));
    assert!(!a.can_read(&anon, "secret/x"));
    // %u / %c.
    assert!(a.can_write(&alice, "users/alice/x"));
    assert!(a.can_read(&alice, "users/alice/x"));
    assert!(!a.can_write(&alice, "users/bob/x"));
    assert!(!a.can_write(&anon, "users//x"));
    assert!(a.can_write(&bob, "devices/c2/state"));
    assert!(!a.can_write(&bob, "devices/c1/state"));
    assert!(a.can_read(&bob, "devices/c2/state"), "allow read #");
    // client section first; $SYS only where named [MQTT-4.7.2-1].
    let special = Who::new(Some("bob"), "special");
    assert!(a.can_read(&special, "$SYS/uptime"));
    assert!(!a.can_read(&bob, "$SYS/uptime"));
}

#[test]
fn subscribe_needs_coverage_and_overlap_is_filtered_per_delivery() {
    let a = acl();
    let bob = Who::new(Some("bob"), "c2");
    assert_eq!(
        a.can_subscribe(&bob, "public/#"),
        SubDecision::Allowed { exact: true }
    );
    assert_eq!(a.can_subscribe(&bob, "secret/x"), SubDecision::Denied);
    assert_eq!(a.can_subscribe(&bob, "secret/#"), SubDecision::Denied);
    // `#` overlaps `deny read secret/#` but is covered by `allow read #` after it.
    assert_eq!(
        a.can_subscribe(&bob, "#"),
        SubDecision::Allowed { exact: false }
    );
    assert_eq!(a.can_subscribe(&bob, "$SYS/#"), SubDecision::Denied);
    let special = Who::new(None, "special");
    assert_eq!(
        a.can_subscribe(&special, "$SYS/#"),
        SubDecision::Allowed { exact: true }
    );
}

#[test]
fn default_applies_when_nothing_matches() {
    let allow = Acl::parse("default allow\nall\ndeny write x\n").unwrap();
    let who = Who::new(None, "c");
    assert!(allow.can_write(&who, "y"));
    assert!(!allow.can_write(&who, "x"));
    assert_eq!(
        allow.can_subscribe(&who, "#"),
        SubDecision::Allowed { exact: true }
    );
    let empty = Acl::parse("").unwrap();
    assert!(!empty.can_read(&who, "y"), "absent default: deny");
    assert_eq!(empty.can_subscribe(&who, "y"), SubDecision::Denied);
    let deny_overlap = Acl::parse("default allow\nall\ndeny read s/#\n").unwrap();
    assert_eq!(
        deny_overlap.can_subscribe(&who, "#"),
        SubDecision::Allowed { exact: false }
    );
}

#[test]
fn bad_lines_name_their_line() {
    for (text, line) in [
        ("allow read a\n", 1),
        ("all\nallow read\n", 2),
        ("all\n\nallow sometimes a\n", 3),
        ("all\nallow read a/#/b\n", 2),
        ("default maybe\n", 1),
        ("default deny\ndefault allow\n", 2),
        ("user\n", 1),
        ("all extra\n", 1),
        ("frobnicate\n", 1),
        ("all\nallow read a/%q\n", 2),
        ("all\npermit read a\n", 2),
    ] {
        match Acl::parse(text) {
            Err(AclError::Line { line: l, why }) => assert_eq!(l, line, "{text:?}: {why}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn bounded() {
    let mut text = String::from("all\n");
    for _ in 0..=MAX_RULES {
        text.push_str("allow read a\n");
    }
    assert!(matches!(Acl::parse(&text), Err(AclError::TooManyRules)));
    let big = "#".repeat(MAX_FILE_BYTES + 1);
    assert!(matches!(Acl::parse(&big), Err(AclError::TooLarge)));
}

#[test]
fn names_with_spaces_and_crlf() {
    let a = Acl::parse("user Alice Smith\r\nallow write a b/c\r\n").unwrap();
    let who = Who::new(Some("Alice Smith"), "c");
    assert!(a.can_write(&who, "a b/c"));
}

proptest::proptest! {
    /// Any text: parse never panics, and whatever parses can be checked.
    #[test]
    fn parse_is_total(text in "[a-z%+#/ \n$]{0,80}", topic in "[a-z/$]{1,8}") {
        let text = format!("all\n{text}");
        if let Ok(a) = Acl::parse(&text) {
            let who = Who::new(Some("u"), "c");
            let _ = a.can_read(&who, &topic);
            let _ = a.can_write(&who, &topic);
        }
    }
}
