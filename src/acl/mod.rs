//! Authorization: which client may publish to (write) and receive from (read) which topics,
//! from an ACL file. Sans-IO: [`Acl::parse`] takes the file's text, the checks take an
//! identity and a topic; [`AclStore`] adds the file and its reload.
//!
//! # File format
//! Line based; blank lines and lines starting with `#` are ignored; leading and trailing
//! white space is ignored.
//!
//! ```text
//! default deny                 # allow | deny; when absent: deny
//!
//! all                          # everyone, anonymous clients included
//! allow read  public/#
//! deny  read  $SYS/#
//!
//! anonymous                    # clients without a user name
//! allow read  status/+
//!
//! user alice                   # the authenticated user name (rest of the line)
//! allow readwrite home/alice/#
//!
//! client sensor-7              # the client id (rest of the line)
//! allow write sensors/7/+
//!
//! all
//! allow readwrite users/%u/#   # %u: the user name, %c: the client id, %%: a '%'
//! allow write devices/%c/+/state
//! ```
//!
//! A rule is `allow|deny read|write|readwrite PATTERN`; PATTERN is the rest of the line, an
//! MQTT topic filter (`+`, `#`) in which `%u` and `%c` may stand for a whole level or part of
//! one (see [`pattern`] for the exact rules: a `%u` pattern never matches an anonymous
//! client, and a substituted value containing `/`, `+` or `#` matches nothing). A section
//! header (`all`, `anonymous`, `user NAME`, `client ID`) starts a section; the same header
//! may appear again and adds rules to it. A rule before any section header is an error.
//!
//! # Decisions
//! A client's rules are looked up in this order: its `client` section, its `user` section
//! (or `anonymous` without a user name), `all`, then `default`. Within a section the first
//! rule that matches (and whose access includes the operation) decides.
//! - Publish: [`Acl::can_write`] on the topic name.
//! - Delivery: [`Acl::can_read`] on the topic name, for every message sent to a client.
//! - Subscribe: [`Acl::can_subscribe`]. A filter is granted when a read rule *covers* it
//!   (every topic it can match is matched by the rule) before any read deny covers it; a
//!   deny that merely *overlaps* it does not refuse it, the per-delivery read check then
//!   keeps those topics out. `$` topics are only reached by rules that name them
//!   [MQTT-4.7.2-1]: `allow read #` does not open `$SYS/#`.
//!
//! Bounds: at most [`MAX_FILE_BYTES`] bytes and [`MAX_RULES`] rules; bad lines are refused
//! with their line number and the previous ACL stays in force.
//!
//! Immutable once parsed; shared read-only by every shard through [`AclStore`].

use ahash::AHashMap;

pub mod pattern;
mod store;

pub use pattern::{Pattern, PatternError, Split, Who};
pub use store::AclStore;

/// Largest ACL file accepted.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Most rules accepted in one file.
pub const MAX_RULES: usize = 100_000;

/// What a rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    fn has_read(self) -> bool {
        self != Access::Write
    }
    fn has_write(self) -> bool {
        self != Access::Read
    }
}

/// One rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub access: Access,
    pub pattern: Pattern,
}

/// The answer to a SUBSCRIBE for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubDecision {
    Denied,
    /// Granted. `exact`: every topic the filter matches is readable, so deliveries need no
    /// further check; otherwise an earlier deny overlaps it and each delivery is checked.
    Allowed {
        exact: bool,
    },
}

/// Why an ACL file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("cannot read ACL file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file exceeds [`MAX_FILE_BYTES`].
    #[error("ACL file is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    /// The file holds more than [`MAX_RULES`] rules.
    #[error("ACL file has more than {MAX_RULES} rules")]
    TooManyRules,
    /// The file is not valid UTF-8.
    #[error("ACL file is not valid UTF-8")]
    NotUtf8,
    /// A line that is not a comment, section header, `default` or valid rule.
    #[error("ACL line {line}: {why}")]
    Line { line: usize, why: String },
}

/// A parsed ACL. Immutable; shared read-only by every shard.
#[derive(Debug, Clone)]
pub struct Acl {
    default_allow: bool,
    all: Vec<Rule>,
    anonymous: Vec<Rule>,
    users: AHashMap<Box<str>, Vec<Rule>>,
    clients: AHashMap<Box<str>, Vec<Rule>>,
    rules: usize,
}

impl Default for Acl {
    /// No rules, deny everything (what a configured but empty file means).
    fn default() -> Acl {
        Acl {
            default_allow: false,
            all: Vec::new(),
            anonymous: Vec::new(),
            users: AHashMap::new(),
            clients: AHashMap::new(),
            rules: 0,
        }
    }
}

enum Section {
    All,
    Anonymous,
    User(Box<str>),
    Client(Box<str>),
}

impl Acl {
    /// Parse the text of an ACL file (format in the module doc).
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(AclError::TooLarge);
        }
        let mut acl = Acl::default();
        let mut default_seen = false;
        let mut section: Option<Section> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let bad = |why: String| AclError::Line { line: i + 1, why };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = split_word(line);
            match word {
                "default" => {
                    if default_seen {
                        return Err(bad("`default` given twice".into()));
                    }
                    default_seen = true;
                    acl.default_allow = match rest {
                        "allow" => true,
                        "deny" => false,
                        _ => {
                            return Err(bad(format!("expected `default allow|deny`, got {line:?}")))
                        }
                    };
                }
                "all" | "anonymous" if !rest.is_empty() => {
                    return Err(bad(format!("`{word}` takes no argument")));
                }
                "all" => section = Some(Section::All),
                "anonymous" => section = Some(Section::Anonymous),
                "user" | "client" if rest.is_empty() => {
                    return Err(bad(format!("`{word}` needs a name")));
                }
                "user" => section = Some(Section::User(rest.into())),
                "client" => section = Some(Section::Client(rest.into())),
                "allow" | "deny" => {
                    let (access, pattern) = split_word(rest);
                    let access = match access {
                        "read" => Access::Read,
                        "write" => Access::Write,
                        "readwrite" => Access::ReadWrite,
                        _ => {
                            return Err(bad(format!(
                                "expected read, write or readwrite after `{word}`, got {access:?}"
                            )))
                        }
                    };
                    let pattern = Pattern::parse(pattern)
                        .map_err(|e| bad(format!("pattern {pattern:?}: {e}")))?;
                    let rule = Rule {
                        allow: word == "allow",
                        access,
                        pattern,
                    };
                    let list = match &section {
                        None => {
                            return Err(bad("rule outside a section: start one with `all`, \
                                 `anonymous`, `user NAME` or `client ID`"
                                .into()))
                        }
                        Some(Section::All) => &mut acl.all,
                        Some(Section::Anonymous) => &mut acl.anonymous,
                        Some(Section::User(u)) => acl.users.entry(u.clone()).or_default(),
                        Some(Section::Client(c)) => acl.clients.entry(c.clone()).or_default(),
                    };
                    list.push(rule);
                    acl.rules += 1;
                    if acl.rules > MAX_RULES {
                        return Err(AclError::TooManyRules);
                    }
                }
                _ => return Err(bad(format!("unknown keyword {word:?}"))),
            }
        }
        Ok(acl)
    }

    /// Rules in the file.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// `default allow`?
    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// One-line summary for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} rules ({} users, {} clients), default {}",
            self.rules,
            self.users.len(),
            self.clients.len(),
            if self.default_allow { "allow" } else { "deny" }
        )
    }

    /// The client's sections in decision order.
    fn sections<'a>(&'a self, who: &Who<'_>) -> [&'a [Rule]; 3] {
        let client = self.clients.get(who.client).map_or(&[][..], Vec::as_slice);
        let user = match who.user {
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous,
        };
        [client, user, &self.all]
    }

    /// May `who` publish to the topic name `topic`?
    pub fn can_write(&self, who: &Who<'_>, topic: &str) -> bool {
        self.decide(who, topic, Access::has_write)
    }

    /// May `who` receive a message published to `topic`?
    pub fn can_read(&self, who: &Who<'_>, topic: &str) -> bool {
        self.decide(who, topic, Access::has_read)
    }

    fn decide(&self, who: &Who<'_>, topic: &str, op: fn(Access) -> bool) -> bool {
        let topic = Split::new(topic);
        for rules in self.sections(who) {
            for r in rules {
                if op(r.access) && r.pattern.matches_split(&topic, who) {
                    return r.allow;
                }
            }
        }
        self.default_allow
    }

    /// May `who` subscribe to `filter` (a valid topic filter; for a shared subscription,
    /// the filter after `$share/{group}/`)? See the module doc.
    pub fn can_subscribe(&self, who: &Who<'_>, filter: &str) -> SubDecision {
        let mut overlapped = false;
        let split = Split::new(filter);
        for rules in self.sections(who) {
            for r in rules.iter().filter(|r| r.access.has_read()) {
                if r.pattern.covers_split(&split, who) {
                    return if r.allow {
                        SubDecision::Allowed { exact: !overlapped }
                    } else {
                        SubDecision::Denied
                    };
                }
                if !r.allow && !overlapped {
                    overlapped = r.pattern.overlaps(filter, who);
                }
            }
        }
        if self.default_allow {
            SubDecision::Allowed { exact: !overlapped }
        } else {
            SubDecision::Denied
        }
    }
}

/// The first white-space separated word of `s` and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests;
