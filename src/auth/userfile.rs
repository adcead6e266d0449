//! The `user:secret` line format shared by the credentials files (SCRAM keys, argon2id
//! password hashes): one user per line, `#` comments and blank lines ignored, user names
//! without `:` or line breaks, each user at most once.
//!
//! Pure text handling; the callers decode the secret and own the result.

use std::collections::HashMap;

/// A user name that can be stored in a credentials file.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.contains([':', '\n', '\r']) {
        return Err(format!("user name {user:?} contains ':' or a line break"));
    }
    Ok(())
}

/// Parse every `user:secret` line of `text` with `decode`. On error: the 1-based line number
/// and why (a bad user name, a bad secret, a user defined twice).
pub fn parse_lines<T>(
    text: &str,
    expected: &str,
    mut decode: impl FnMut(&str) -> Result<T, String>,
) -> Result<HashMap<String, T>, (usize, String)> {
    let mut users: HashMap<String, (usize, T)> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, value)) = line.split_once(':') else {
            return Err((line_no, format!("expected user:{expected}")));
        };
        check_user(user).map_err(|why| (line_no, why))?;
        let secret = decode(value).map_err(|why| (line_no, why))?;
        if let Some((first, _)) = users.get(user) {
            return Err((
                line_no,
                format!("user {user:?} is already defined on line {first}"),
            ));
        }
        users.insert(user.to_string(), (line_no, secret));
    }
    Ok(users.into_iter().map(|(u, (_, s))| (u, s)).collect())
}

/// `text` with `user`'s line replaced by `line` (appended when absent), or removed when
/// `line` is `None`; every other line (comments, other users) is kept as it was.
/// Returns the new text and whether `user` had a line.
pub fn edit_lines(text: &str, user: &str, line: Option<&str>) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + line.map_or(0, str::len) + 1);
    let mut found = false;
    for raw in text.lines() {
        let is_user = raw
            .trim()
            .split_once(':')
            .is_some_and(|(u, _)| u == user && !raw.trim().starts_with('#'));
        if is_user {
            // A second line for the user (a file that would not load) goes too.
            if let (Some(l), false) = (line, found) {
                out.push_str(l);
                out.push('\n');
            }
            found = true;
            continue;
        }
        out.push_str(raw);
        out.push('\n');
    }
    if let (Some(l), false) = (line, found) {
        out.push_str(l);
        out.push('\n');
    }
    (out, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Result<u32, String> {
        s.parse().map_err(|e| format!("{e}"))
    }

    #[test]
    fn parses_with_line_numbers_and_rejects_duplicates() {
        let ok = parse_lines("# c\n\n a:1 \nb:2\n", "N", num).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok["a"], 1);
        assert_eq!(parse_lines("a:1\nb\n", "N", num).unwrap_err().0, 2);
        assert_eq!(parse_lines("a:1\n:2\n", "N", num).unwrap_err().0, 2);
        assert_eq!(parse_lines("a:x\n", "N", num).unwrap_err().0, 1);
        let (line, why) = parse_lines("a:1\n#\na:2\n", "N", num).unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains("line 1"), "{why}");
    }

    #[test]
    fn edits_keep_other_lines() {
        let text = "# users\nalice:1\nbob:2\n";
        let (t, found) = edit_lines(text, "bob", Some("bob:3"));
        assert!(found);
        assert_eq!(t, "# users\nalice:1\nbob:3\n");
        let (t, found) = edit_lines(&t, "carol", Some("carol:4"));
        assert!(!found);
        assert_eq!(t, "# users\nalice:1\nbob:3\ncarol:4\n");
        let (t, found) = edit_lines(&t, "alice", None);
        assert!(found);
        assert_eq!(t, "# users\nbob:3\ncarol:4\n");
        // A commented-out line is not the user's.
        let (t, found) = edit_lines("#bob:1\n", "#bob", None);
        assert!(!found);
        assert_eq!(t, "#bob:1\n");
    }
}
