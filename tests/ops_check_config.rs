//! `ringmq check-config FILE` (issue 7, packaging): exit 0 with a summary when the broker
//! would start, 2 for an invalid setting, 1 when a file the configuration names does not load
//! (TLS certificate or key, ACL, password file) — without binding or touching a data dir.

mod common;

use common::ops::check_config as check;
use common::tls::Pki;

#[test]
fn check_config_accepts_a_good_file_and_names_what_is_wrong() {
    let pki = Pki::new("checkcfg");
    let dir = &pki.dir;
    let acl = dir.join("acl");
    std::fs::write(&acl, "default deny\nall\nallow read public/#\n").unwrap();
    let good = dir.join("good.toml");
    // Port 1 is never bound: nothing is.
    std::fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:1\"\nacl_file = {:?}\nlog_level = \"debug\"\n\n[[listeners]]\nname = \"secure\"\nbind = \"127.0.0.1:2\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            acl, pki.server_cert, pki.server_key
        ),
    )
    .unwrap();
    let (code, out, err) = check(&good);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("listener secure on 127.0.0.1:2 (tls)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with(": ok"), "{out}");
    assert!(
        !dir.join("ringmq-data").exists(),
        "check-config touched a data directory"
    );

    // An invalid setting: exit 2, the key named.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "max_inflight = 0\n").unwrap();
    let (code, _, err) = check(&bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max_inflight"), "{err}");
    // An unknown key.
    std::fs::write(&bad, "max_infligth = 10\n").unwrap();
    let (code, _, err) = check(&bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max_infligth"), "{err}");

    // A file it names that does not load: exit 1, the file named.
    std::fs::write(&acl, "all\nallow sometimes x/#\n").unwrap();
    let (code, _, err) = check(&good);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 2"), "{err}");
    std::fs::write(&acl, "default deny\n").unwrap();
    std::fs::write(&pki.server_key, "not a key\n").unwrap();
    let (code, _, err) = check(&good);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no usable private key"), "{err}");
}
