//! SCRAM-SHA-256 server tests: RFC 7677's example, full exchanges against an independent
//! test client, refusals, garbled input and the credentials file.

use super::*;
use crate::auth::Registry;
use proptest::prelude::*;

#[path = "../../tests/common/scram_client.rs"]
mod client;
use client::ScramClient;

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

fn method_with(lines: &[String]) -> ScramSha256 {
    let creds = parse_credentials(&lines.join("\n"), Path::new("test")).expect("parse");
    ScramSha256::new(creds).expect("random")
}

fn pencil() -> ScramSha256 {
    let salt = B64.decode(RFC_SALT).unwrap();
    method_with(&[derive_line_with_salt("user", "pencil", 4096, &salt).unwrap()])
}

fn continue_text(s: Step) -> String {
    match s {
        Step::Continue(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("expected Continue, got {other:?}"),
    }
}

/// Run a whole exchange with the test client; the server's final step.
fn exchange(m: &ScramSha256, user: &str, password: &str) -> (Step, ScramClient) {
    let mut c = ScramClient::new(user, password, "fyko+d2lbbFgONRv9qkxdawL");
    let mut ex = m.start();
    let server_first = continue_text(ex.step(c.client_first().as_bytes()));
    let fin = c.client_final(&server_first).unwrap();
    (ex.step(fin.as_bytes()), c)
}

#[test]
fn rfc7677_section3_example() {
    let m = pencil();
    let mut ex = m.start_with_nonce(RFC_SERVER_NONCE);
    let first = format!("n,,n=user,r={RFC_CLIENT_NONCE}");
    let server_first = continue_text(ex.step(first.as_bytes()));
    assert_eq!(
        server_first,
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    // The test client computes the RFC's client-final message too.
    let mut c = ScramClient::new("user", "pencil", RFC_CLIENT_NONCE);
    assert_eq!(c.client_first(), first);
    let fin = c.client_final(&server_first).unwrap();
    assert_eq!(
        fin,
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    let expected_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(
        ex.step(fin.as_bytes()),
        Step::Success {
            data: Some(Bytes::from_static(expected_final.as_bytes())),
            user: "user".into()
        }
    );
    c.verify_server_final(expected_final).unwrap();
    // The exchange is over.
    assert_eq!(ex.step(b"x"), Step::Failure(Failure::Unspecified));
}

#[test]
fn full_exchange_with_random_nonce_and_escaped_user_name() {
    let m = method_with(&[
        derive_line("a,b=c", "s3cret", 4096).unwrap(),
        derive_line("bob", "hunter2", 4096).unwrap(),
    ]);
    assert_eq!(m.len(), 2);
    for (user, pw) in [("a,b=c", "s3cret"), ("bob", "hunter2")] {
        let (step, c) = exchange(&m, user, pw);
        match step {
            Step::Success {
                data: Some(d),
                user: u,
            } => {
                assert_eq!(u, user);
                c.verify_server_final(std::str::from_utf8(&d).unwrap())
                    .unwrap();
            }
            other => panic!("expected success, got {other:?}"),
        }
    }
}

#[test]
fn wrong_password_and_unknown_user_are_not_authorized() {
    let m = pencil();
    assert_eq!(
        exchange(&m, "user", "pencil!").0,
        Step::Failure(Failure::NotAuthorized)
    );
    assert_eq!(
        exchange(&m, "nobody", "pencil").0,
        Step::Failure(Failure::NotAuthorized)
    );
    // An unknown user sees a stable salt and the default iteration count, like a real one.
    let salt_of = |user: &str| {
        let c = ScramClient::new(user, "x", "abc");
        let s = continue_text(m.start().step(c.client_first().as_bytes()));
        s.split(',').skip(1).collect::<Vec<_>>().join(",")
    };
    assert_eq!(salt_of("ghost"), salt_of("ghost"));
    assert_ne!(salt_of("ghost"), salt_of("ghoul"));
    assert!(salt_of("ghost").ends_with(",i=4096"));
}

#[test]
fn channel_binding_and_authzid_are_refused() {
    let m = pencil();
    for first in [
        "y,,n=user,r=abc",
        "p=tls-unique,,n=user,r=abc",
        "n,a=admin,n=user,r=abc",
    ] {
        assert_eq!(
            m.start().step(first.as_bytes()),
            Step::Failure(Failure::NotAuthorized),
            "{first}"
        );
    }
}

#[test]
fn garbled_client_first_messages_fail() {
    let m = pencil();
    let long = format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE));
    let bad: &[&[u8]] = &[
        b"",
        b"n",
        b"n,,",
        b"n,,n=user",
        b"n,,n=,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user,r=",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2,r=abc",
        b"n,,n=user,r=ab c",
        b"n,,n=user,r=abc,e=1",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=user,r=abc,",
        b"\xff\xfe",
        long.as_bytes(),
    ];
    for b in bad {
        assert!(
            matches!(m.start().step(b), Step::Failure(_)),
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn garbled_client_final_messages_fail() {
    let m = pencil();
    let mut c = ScramClient::new("user", "pencil", "abc");
    let mut ex = m.start_with_nonce("XYZ");
    let server_first = continue_text(ex.step(c.client_first().as_bytes()));
    let good = c.client_final(&server_first).unwrap();
    let proof = good.rsplit_once(",p=").unwrap().1.to_string();
    let bad = [
        String::new(),
        "c=biws".into(),
        "c=biws,r=abcXYZ".to_string(),
        format!("c=biws,r=abcXYZW,p={proof}"),
        format!("c=biws,r=abc,p={proof}"),
        format!("r=abcXYZ,c=biws,p={proof}"),
        format!("c=biws,r=abcXYZ,p={proof},x=1"),
        "c=biws,r=abcXYZ,p=!!!".to_string(),
        format!("c=biws,r=abcXYZ,p={}", B64.encode([0u8; 31])),
        format!("c=eSws,r=abcXYZ,p={proof}"),
    ];
    for b in &bad {
        let mut ex = m.start_with_nonce("XYZ");
        continue_text(ex.step(c.client_first().as_bytes()));
        assert!(matches!(ex.step(b.as_bytes()), Step::Failure(_)), "{b}");
    }
    // The good one still passes on a fresh exchange.
    assert!(matches!(ex.step(good.as_bytes()), Step::Success { .. }));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(first in proptest::collection::vec(any::<u8>(), 0..300),
                                second in proptest::collection::vec(any::<u8>(), 0..300)) {
        let m = pencil();
        let mut ex = m.start();
        let a = ex.step(&first);
        // Whatever the first answer, random bytes never complete a SCRAM proof.
        let b = ex.step(&second);
        prop_assert!(matches!(b, Step::Failure(_)), "second step: {:?}", b);
        prop_assert!(!matches!(a, Step::Success { .. }), "first step: {:?}", a);
    }

    #[test]
    fn random_final_after_valid_first_fails(second in "[ -~]{0,200}") {
        let m = pencil();
        let mut ex = m.start();
        continue_text(ex.step(b"n,,n=user,r=abc"));
        prop_assert!(matches!(ex.step(second.as_bytes()), Step::Failure(_)));
    }
}

#[test]
fn credentials_file_errors_name_the_line() {
    let good = derive_line("alice", "pw", 4096).unwrap();
    let path = Path::new("creds.txt");
    let cases = [
        ("no colon".to_string(), 3, "expected user:"),
        (format!(":{}", &good[6..]), 3, "empty user name"),
        ("bob:PLAIN$x".to_string(), 3, "scheme"),
        (
            "bob:SCRAM-SHA-256$0:c2FsdA==$a:b".to_string(),
            3,
            "iteration",
        ),
        ("bob:SCRAM-SHA-256$4096:!!$a:b".to_string(), 3, "salt"),
        (
            "bob:SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ==".to_string(),
            3,
            "StoredKey",
        ),
        ("bob:SCRAM-SHA-256$4096:c2FsdA==".to_string(), 3, "expected"),
        (good.clone(), 3, "already defined on line 2"),
    ];
    for (line, at, why) in cases {
        let text = format!("# users\n{good}\n{line}\n");
        match parse_credentials(&text, path) {
            Err(e @ CredentialError::Line { line: n, .. }) => {
                assert_eq!(n, at, "{e}");
                let msg = e.to_string();
                assert!(msg.contains(why) && msg.contains("creds.txt"), "{msg}");
            }
            other => panic!("{line:?}: expected a line error, got {other:?}"),
        }
    }
    let ok = parse_credentials(&format!("\n# c\n  {good}  \r\n"), path).unwrap();
    assert_eq!(ok.len(), 1);
    assert!(derive_line("a:b", "pw", 1).is_err());
    assert!(derive_line("ab", "pw", 0).is_err());
}

#[test]
fn registry_loads_the_file_and_reports_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("ringmq-scram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scram.txt");
    std::fs::write(&file, derive_line("user", "pencil", 4096).unwrap()).unwrap();
    let r = Registry::from_config(Some(&file)).unwrap();
    assert!(r.get(METHOD).is_some());
    let missing = Registry::from_config(Some(&dir.join("nope"))).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
    assert!(Registry::from_config(None).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
