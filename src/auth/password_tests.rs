use super::*;

/// Cheap costs so debug-build tests stay fast (the format is what matters here).
fn cheap(user: &str, password: &str) -> String {
    let params = Params::new(64, 1, 1, None).unwrap();
    format!("{user}:{}", hash_with(password.as_bytes(), params).unwrap())
}

fn parse(text: &str) -> Result<PasswordFile, PasswordError> {
    PasswordFile::parse(text, Path::new("test-passwd"))
}

fn line_of(e: PasswordError) -> (usize, String) {
    match e {
        PasswordError::Line { line, why, .. } => (line, why),
        other => panic!("expected a line error, got {other}"),
    }
}

#[test]
fn verifies_known_users_and_refuses_others() {
    let text = format!(
        "# devices\n{}\n\n{}\n",
        cheap("alice", "s3cret"),
        cheap("bob", "hunter2")
    );
    let f = parse(&text).unwrap();
    assert_eq!(f.len(), 2);
    assert!(f.verify("alice", b"s3cret"));
    assert!(f.verify("bob", b"hunter2"));
    assert!(!f.verify("alice", b"hunter2"));
    assert!(!f.verify("alice", b""));
    assert!(!f.verify("carol", b"s3cret"));
    assert_eq!(f.check("alice", b"s3cret", "c", None), Verdict::Allow);
    // Unknown user and wrong password are indistinguishable in the verdict.
    assert_eq!(f.check("nobody", b"x", "c", None), Verdict::BadCredentials);
    assert_eq!(f.check("bob", b"x", "c", None), Verdict::BadCredentials);
    assert!(f.cache_tag("alice").is_some());
    assert!(f.cache_tag("nobody").is_none());
    assert!(
        !format!("{f:?}").contains("argon2id"),
        "Debug shows no hashes"
    );
}

#[test]
fn stand_in_takes_the_first_entrys_costs() {
    let f = parse(&cheap("alice", "pw")).unwrap();
    let h = PasswordHash::new(&f.stand_in).unwrap();
    let p = Params::try_from(&h).unwrap();
    assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (64, 1, 1));
}

#[test]
fn errors_name_the_line() {
    let good = cheap("alice", "pw");
    let (line, why) = line_of(parse(&format!("{good}\nbob\n")).err().unwrap());
    assert_eq!(line, 2);
    assert!(why.contains("expected user:"), "{why}");
    let (line, why) = line_of(
        parse(&format!("# x\n{good}\n{}\n", cheap("alice", "other")))
            .err()
            .unwrap(),
    );
    assert_eq!(line, 3);
    assert!(why.contains("already defined on line 2"), "{why}");
    let (line, why) = line_of(parse("bob:plaintext\n").err().unwrap());
    assert_eq!(line, 1);
    assert!(why.contains("PHC"), "{why}");
    let (_, why) = line_of(
        parse(":$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n")
            .err()
            .unwrap(),
    );
    assert!(why.contains("empty user"), "{why}");
}

#[test]
fn refuses_other_algorithms_versions_and_excessive_costs() {
    let argon2i = "u:$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
    assert!(line_of(parse(argon2i).err().unwrap())
        .1
        .contains("not argon2id"));
    let v16 = "u:$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
    assert!(line_of(parse(v16).err().unwrap()).1.contains("v=19"));
    let huge = format!(
        "u:$argon2id$v=19$m={},t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        MAX_M_KIB + 1
    );
    assert!(line_of(parse(&huge).err().unwrap())
        .1
        .contains("above the limits"));
    let no_hash = "u:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0";
    assert!(parse(no_hash).is_err());
}

#[test]
fn load_bounds_the_file_size() {
    let dir = std::env::temp_dir().join(format!("ringmq-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    assert!(matches!(
        PasswordFile::load(&big),
        Err(PasswordError::TooLarge { .. })
    ));
    assert!(matches!(
        PasswordFile::load(&dir.join("missing")),
        Err(PasswordError::Read { .. })
    ));
    let ok = dir.join("ok");
    std::fs::write(&ok, cheap("alice", "pw") + "\n").unwrap();
    assert_eq!(PasswordFile::load(&ok).unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hash_line_writes_a_loadable_default_cost_entry() {
    let line = hash_line("dev-1", b"pw").unwrap();
    assert!(
        line.starts_with("dev-1:$argon2id$v=19$m=19456,t=2,p=1$"),
        "{line}"
    );
    let f = parse(&line).unwrap();
    assert!(f.verify("dev-1", b"pw"));
    assert!(hash_line("a:b", b"pw").is_err());
    assert!(hash_line("a", b"").is_err());
}
