//! ACL patterns: an MQTT topic filter whose levels may hold `%u` (user name) and `%c`
//! (client id), and the three questions the ACL asks of one: does it match a topic name,
//! does it *cover* a subscription filter (every topic the filter can match), does it
//! *overlap* one (some topic matches both).
//!
//! Matching walks the pattern and the topic level by level and substitutes `%u`/`%c` in
//! place, so no check allocates. A substituted value must be non-empty and free of `/`,
//! `+` and `#`: otherwise a client id such as `+` or `a/b` could widen a pattern like
//! `devices/%c/#` to other clients' topics, so such a pattern then matches nothing.
//! Topics starting with `$` are never matched by a pattern whose first level is a
//! wildcard [MQTT-4.7.2-1], nor by one whose first level starts with a substitution (the
//! value is client-chosen and must not reach `$SYS`).
//!
//! Pure: no state beyond the parsed pattern.

use std::fmt;

/// One piece of a level with substitutions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Box<str>),
    User,
    Client,
}

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// `#`: this level and every one below it (also none: `a/#` matches `a`).
    Hash,
    /// `+`: exactly one level.
    Plus,
    /// A literal level.
    Lit(Box<str>),
    /// A level with `%u`/`%c` in it, e.g. `%u` or `dev-%c`.
    Subst(Box<[Piece]>),
}

/// Who is asking: the identity `%u` and `%c` stand for.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The authenticated user name; `None` for an anonymous client.
    pub user: Option<&'a str>,
    pub client: &'a str,
}

impl<'a> Who<'a> {
    pub fn new(user: Option<&'a str>, client: &'a str) -> Who<'a> {
        Who { user, client }
    }
}

/// A value may stand for a whole or partial level only if it cannot change the shape of
/// the pattern (see the module doc).
fn usable(v: &str) -> bool {
    !v.is_empty() && !v.bytes().any(|b| matches!(b, b'/' | b'+' | b'#'))
}

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("pattern longer than 65535 bytes")]
    TooLong,
    #[error("pattern contains the null character")]
    NullChar,
    #[error("'#' must be alone in the last level")]
    MisplacedHash,
    #[error("'+' must be alone in its level")]
    MisplacedPlus,
    #[error("'%' must be followed by 'u' (user name), 'c' (client id) or '%'")]
    BadEscape,
    #[error("a shared subscription ($share/...) is not a pattern; write its topic filter")]
    Shared,
}

/// A parsed ACL pattern. Immutable; shared read-only by every shard.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    levels: Box<[Level]>,
    /// Mentions `%u`: never matches an anonymous client.
    needs_user: bool,
    /// The first level is a literal starting with `$` (the only way to reach `$` topics).
    dollar: bool,
    text: Box<str>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// Parse a pattern: a topic filter (`+`/`#` placed as [MQTT-4.7.1-2]/[MQTT-4.7.1-3]
    /// require) with `%u`, `%c` and `%%` (a literal `%`).
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s.len() > crate::proto::topic::MAX_TOPIC_LEN {
            return Err(PatternError::TooLong);
        }
        if s.contains('\0') {
            return Err(PatternError::NullChar);
        }
        if s.starts_with(crate::proto::topic::SHARE_PREFIX) {
            return Err(PatternError::Shared);
        }
        let mut levels = Vec::new();
        let mut needs_user = false;
        let mut parts = s.split('/').peekable();
        while let Some(l) = parts.next() {
            if l.contains('#') {
                if l != "#" || parts.peek().is_some() {
                    return Err(PatternError::MisplacedHash);
                }
                levels.push(Level::Hash);
                continue;
            }
            if l.contains('+') {
                if l != "+" {
                    return Err(PatternError::MisplacedPlus);
                }
                levels.push(Level::Plus);
                continue;
            }
            if !l.contains('%') {
                levels.push(Level::Lit(l.into()));
                continue;
            }
            let mut pieces = Vec::new();
            let mut lit = String::new();
            let mut chars = l.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    lit.push(c);
                    continue;
                }
                let piece = match chars.next() {
                    Some('%') => {
                        lit.push('%');
                        continue;
                    }
                    Some('u') => Piece::User,
                    Some('c') => Piece::Client,
                    _ => return Err(PatternError::BadEscape),
                };
                needs_user |= piece == Piece::User;
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit).into()));
                }
                pieces.push(piece);
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(lit.into()));
            }
            // `%%` alone leaves only literals.
            levels.push(match pieces.as_slice() {
                [Piece::Lit(t)] => Level::Lit(t.clone()),
                _ => Level::Subst(pieces.into()),
            });
        }
        let dollar = match levels.first() {
            Some(Level::Lit(t)) => t.starts_with('$'),
            Some(Level::Subst(p)) => matches!(p.first(), Some(Piece::Lit(t)) if t.starts_with('$')),
            _ => false,
        };
        Ok(Pattern {
            levels: levels.into(),
            needs_user,
            dollar,
            text: s.into(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the identity can be substituted at all (no `%u` for anonymous clients,
    /// only [`usable`] values).
    fn applies(&self, who: &Who<'_>) -> bool {
        if self.needs_user && !who.user.is_some_and(usable) {
            return false;
        }
        // Checked per use of `%c` (most patterns have none).
        true
    }

    /// Does `topic` (a topic name: no wildcards) match?
    pub fn matches(&self, topic: &str, who: &Who<'_>) -> bool {
        self.matches_split(&Split::new(topic), who)
    }

    /// [`Pattern::matches`] on a topic split once for many patterns.
    pub fn matches_split(&self, topic: &Split<'_>, who: &Who<'_>) -> bool {
        if !self.applies(who) || (topic.dollar() && !self.dollar) {
            return false;
        }
        match topic.levels() {
            Some(levels) => self.match_levels(levels.iter().copied(), who),
            None => self.match_levels(topic.whole.split('/'), who),
        }
    }

    fn match_levels<'t>(&self, mut t: impl Iterator<Item = &'t str>, who: &Who<'_>) -> bool {
        for l in self.levels.iter() {
            let ok = match (l, t.next()) {
                (Level::Hash, _) => return true,
                (_, None) => false,
                (Level::Plus, Some(_)) => true,
                (Level::Lit(s), Some(x)) => **s == *x,
                (Level::Subst(p), Some(x)) => subst_eq(p, x, who),
            };
            if !ok {
                return false;
            }
        }
        t.next().is_none()
    }

    /// Is every topic the (valid, non-shared) filter `filter` can match also matched by
    /// this pattern?
    pub fn covers(&self, filter: &str, who: &Who<'_>) -> bool {
        self.covers_split(&Split::new(filter), who)
    }

    /// [`Pattern::covers`] on a filter split once for many patterns.
    pub fn covers_split(&self, filter: &Split<'_>, who: &Who<'_>) -> bool {
        // A filter starting with `$` only matches `$` topics (its first level is a literal).
        if !self.applies(who) || (filter.dollar() && !self.dollar) {
            return false;
        }
        match filter.levels() {
            Some(levels) => self.cover_levels(levels.iter().copied(), who),
            None => self.cover_levels(filter.whole.split('/'), who),
        }
    }

    fn cover_levels<'f>(&self, mut f: impl Iterator<Item = &'f str>, who: &Who<'_>) -> bool {
        // Whether the filter levels read so far can only spell the empty topic name, which
        // is not a topic [MQTT-4.7.3-1]: none read, or one empty level.
        let mut empty_so_far = true;
        for (i, l) in self.levels.iter().enumerate() {
            let x = f.next();
            let ok = match (l, x) {
                (Level::Hash, _) => return true,
                // The filter's `#` reaches its parent topic and everything below; `+/#`
                // reaches everything below too, and the parent is no topic when it would be
                // the empty name (`#` vs `+/#`, `/#` vs `/+/#`).
                (Level::Plus, Some("#")) => {
                    empty_so_far && matches!(self.levels.get(i + 1), Some(Level::Hash))
                }
                // The filter is done but the pattern wants another level (`a` vs `a/+`);
                // or the filter's `#` reaches topics this level does not (`a/#` vs `a/+`).
                (_, None) | (_, Some("#")) => false,
                (Level::Plus, Some(_)) => true,
                (Level::Lit(s), Some(x)) => **s == *x,
                (Level::Subst(p), Some(x)) => x != "+" && subst_eq(p, x, who),
            };
            if !ok {
                return false;
            }
            if x == Some("#") {
                // Only `+/#` gets here, and it covers the rest.
                return true;
            }
            empty_so_far = i == 0 && x == Some("");
        }
        f.next().is_none()
    }

    /// Can some topic match both this pattern and the (valid, non-shared) filter `filter`?
    /// Conservative: may answer yes for a `$` topic neither could reach through a leading
    /// substitution, never no when such a topic exists.
    pub fn overlaps(&self, filter: &str, who: &Who<'_>) -> bool {
        if !self.applies(who) {
            return false;
        }
        let f_dollar = filter.starts_with('$');
        let f_wild0 = matches!(filter.split('/').next(), Some("+" | "#"));
        // `$` topics: the filter reaches them only through a literal first level; this
        // pattern only through a `$` literal first level.
        if (f_dollar && !self.dollar) || (self.dollar && f_wild0) {
            return false;
        }
        let mut f = filter.split('/');
        for l in self.levels.iter() {
            let ok = match (l, f.next()) {
                (Level::Hash, _) | (_, Some("#")) => return true,
                (_, None) => false,
                (Level::Plus, Some(_)) | (_, Some("+")) => true,
                (Level::Lit(s), Some(x)) => **s == *x,
                (Level::Subst(p), Some(x)) => subst_eq(p, x, who),
            };
            if !ok {
                return false;
            }
        }
        matches!(f.next(), None | Some("#"))
    }
}

/// Levels held on the stack by [`Split`]; deeper topics are split again per pattern.
const FAST_LEVELS: usize = 16;

/// A topic name or filter split into levels once, on the stack, so that checking it
/// against many patterns does not search for `/` again for each (no allocation).
pub struct Split<'a> {
    whole: &'a str,
    buf: [&'a str; FAST_LEVELS],
    /// Levels in `buf`; `FAST_LEVELS + 1`: too many, use `whole`.
    n: usize,
}

impl<'a> Split<'a> {
    pub fn new(whole: &'a str) -> Split<'a> {
        let mut buf = [""; FAST_LEVELS];
        let mut n = 0;
        for l in whole.split('/') {
            if n == FAST_LEVELS {
                n += 1;
                break;
            }
            buf[n] = l;
            n += 1;
        }
        Split { whole, buf, n }
    }

    fn levels(&self) -> Option<&[&'a str]> {
        self.buf.get(..self.n)
    }

    fn dollar(&self) -> bool {
        self.whole.starts_with('$')
    }
}

/// Does the level `x` equal the substituted pieces? Walks `x` once, no allocation.
fn subst_eq(pieces: &[Piece], x: &str, who: &Who<'_>) -> bool {
    let mut rest = x;
    for p in pieces {
        let v = match p {
            Piece::Lit(s) => &**s,
            Piece::User => match who.user {
                Some(u) => u,
                None => return false,
            },
            Piece::Client => who.client,
        };
        if !matches!(p, Piece::Lit(_)) && !usable(v) {
            return false;
        }
        match rest.strip_prefix(v) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests;
