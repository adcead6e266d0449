//! `ringmq passwd [-D] [--scram FILE2] FILE USER`: add, update or delete one user of a
//! password file (and optionally the same user's line in a SCRAM credentials file).
//!
//! The password is read from standard input: on a terminal it is asked twice without echo;
//! otherwise the first line is taken (`echo secret | ringmq passwd f u`; a trailing `\r\n`
//! or `\n` is not part of it). Files are rewritten atomically (a temporary file in the same
//! directory, fsync, rename, fsync of the directory), keeping every other line as it was and
//! the file's mode and owner; a new file is created with mode 0600.
//!
//! Runs in the `ringmq` process instead of the broker; owns nothing shared.

use std::fs::OpenOptions;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::password::hash_line;
use super::scram::{derive_line, DEFAULT_ITERATIONS};
use super::userfile::{check_user, edit_lines};

/// The arguments of `ringmq passwd`.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// Delete USER instead of adding or updating it.
    #[arg(short = 'D', long = "delete")]
    pub delete: bool,
    /// Also write (or delete) USER's SCRAM-SHA-256 line in this SCRAM credentials file
    /// (`auth_scram_file`), with the same password.
    #[arg(long, value_name = "FILE2")]
    pub scram: Option<PathBuf>,
    /// The password file (`password_file`); created if missing.
    pub file: PathBuf,
    /// The user name to add, update or delete.
    pub user: String,
}

/// Do what `args` say; `Ok` is a one-line summary for the operator.
pub fn run(args: &PasswdArgs) -> Result<String, String> {
    check_user(&args.user)?;
    if args.delete {
        let mut done = vec![delete_from(&args.file, &args.user)?];
        if let Some(scram) = &args.scram {
            done.push(delete_from(scram, &args.user)?);
        }
        return Ok(done.join("; "));
    }
    let password = read_password()?;
    let line = hash_line(&args.user, password.as_bytes()).map_err(|e| e.to_string())?;
    let mut done = vec![put_line(&args.file, &args.user, &line)?];
    if let Some(scram) = &args.scram {
        let line =
            derive_line(&args.user, &password, DEFAULT_ITERATIONS).map_err(|e| e.to_string())?;
        done.push(put_line(scram, &args.user, &line)?);
    }
    Ok(done.join("; "))
}

fn put_line(path: &Path, user: &str, line: &str) -> Result<String, String> {
    let old = read_existing(path)?;
    let (text, found) = edit_lines(old.as_deref().unwrap_or(""), user, Some(line));
    write_atomically(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let verb = if found { "updated" } else { "added" };
    Ok(format!("{verb} {user} in {}", path.display()))
}

fn delete_from(path: &Path, user: &str) -> Result<String, String> {
    let Some(old) = read_existing(path)? else {
        return Err(format!("{} does not exist", path.display()));
    };
    let (text, found) = edit_lines(&old, user, None);
    if !found {
        return Err(format!("no user {user} in {}", path.display()));
    }
    write_atomically(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(format!("deleted {user} from {}", path.display()))
}

fn read_existing(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replace `path` with `text` so readers see the old or the new file, never a mix.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "passwd".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let existing = std::fs::metadata(path).ok();
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        if let Some(m) = &existing {
            // Keep the mode and (when permitted) the owner of the file being replaced.
            f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The new password: asked twice without echo on a terminal, else the first line of stdin.
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt_hidden("Password: ")?;
        if prompt_hidden("Again: ")? != first {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        read_line()?
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}

fn read_line() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(trimmed.to_string())
}

/// Read one line from the terminal with echo off (restored afterwards).
fn prompt_hidden(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    // SAFETY: termios is plain data; tcgetattr fills it or fails, and then it is not used.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut term) } != 0 {
        return read_line();
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: a valid termios for stdin, obtained above.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term) };
    let line = read_line();
    // SAFETY: as above; restores the terminal as it was.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved) };
    line
}
