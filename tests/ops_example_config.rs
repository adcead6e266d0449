//! The example configuration `scripts/ringmq.toml` (issue 7, packaging) names every option
//! the broker has, `ringmq check-config` accepts it as shipped, and every value it shows in a
//! comment is valid too (uncommented, with real files in place of the /etc paths).

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde::de::{Error as _, Visitor};

fn check(file: &Path) -> (Option<i32>, String) {
    let (code, out, err) = common::ops::check_config(file);
    (code, out + &err)
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ringmq.toml");

/// A deserializer that only records the field names a struct asks for.
struct FieldNames(RefCell<Vec<&'static str>>);

impl<'de> serde::Deserializer<'de> for &FieldNames {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(Self::Error::custom("field names only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0.borrow_mut() = fields.to_vec();
        Err(Self::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields_of<T: for<'de> serde::Deserialize<'de>>() -> Vec<&'static str> {
    let names = FieldNames(RefCell::new(Vec::new()));
    let _ = T::deserialize(&names);
    let v = names.0.into_inner();
    assert!(!v.is_empty(), "no fields captured");
    v
}

/// Whether `key` is set, or shown commented out, at the start of a line of `text`.
fn mentions(text: &str, key: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start_matches('#').trim_start();
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

#[test]
fn every_option_is_in_the_example_config() {
    let text = std::fs::read_to_string(EXAMPLE).expect("scripts/ringmq.toml");
    let mut missing = Vec::new();
    for f in fields_of::<ringmq::config::Config>() {
        if f == "listeners" {
            assert!(text.contains("[[listeners]]"), "no [[listeners]] example");
        } else if !mentions(&text, f) {
            missing.push(f.to_string());
        }
    }
    let listeners = &text[text.find("[[listeners]]").expect("[[listeners]]")..];
    for f in fields_of::<ringmq::listener::ListenerConfig>() {
        if !mentions(listeners, f) {
            missing.push(format!("[[listeners]] {f}"));
        }
    }
    assert!(missing.is_empty(), "scripts/ringmq.toml lacks: {missing:?}");
}

#[test]
fn the_example_config_checks_as_shipped_and_with_every_commented_value() {
    let (code, out) = check(Path::new(EXAMPLE));
    assert_eq!(code, Some(0), "{out}");

    // Every commented-out setting, uncommented, with real files for the /etc paths.
    let pki = common::tls::Pki::new("example-cfg");
    let dir: PathBuf = pki.dir.clone();
    let acl = dir.join("acl");
    std::fs::write(&acl, "default allow\n").unwrap();
    let passwd = common::passwd::password_file(&[("alice", "secret")]);
    let scram = common::auth::scram_file(&[("bob", "secret")]);
    let files: [(&str, &Path); 6] = [
        ("/etc/ringmq/server.pem", &pki.server_cert),
        ("/etc/ringmq/server.key", &pki.server_key),
        ("/etc/ringmq/clients-ca.pem", &pki.ca),
        ("/etc/ringmq/passwd", &passwd),
        ("/etc/ringmq/scram", &scram),
        ("/etc/ringmq/acl", &acl),
    ];
    let text = std::fs::read_to_string(EXAMPLE).expect("scripts/ringmq.toml");
    let mut full = String::new();
    let mut uncommented = 0;
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        let setting = body.starts_with("[[")
            || body
                .split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if setting {
            uncommented += 1;
            full.push_str(body);
        } else {
            full.push_str(line);
        }
        full.push('\n');
    }
    for (etc, real) in files {
        assert!(full.contains(etc), "{etc} not in the example");
        full = full.replace(etc, real.to_str().expect("utf-8 path"));
    }
    assert!(
        uncommented > 20,
        "only {uncommented} commented settings found"
    );
    let all = dir.join("all.toml");
    std::fs::write(&all, &full).unwrap();
    let (code, out) = check(&all);
    assert_eq!(code, Some(0), "{out}\n---\n{full}");
    assert!(out.contains("(tls)"), "{out}");
}
