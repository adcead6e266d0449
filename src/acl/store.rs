//! The configured ACL file and its reload.
//!
//! Readers never lock: the current [`Acl`] sits in an `ArcSwap`, and a generation counter
//! tells a shard that caches the `Arc` when to fetch it again. A reload parses the whole file
//! first; a file that fails to parse leaves the old ACL in force.
//!
//! Shared by every shard (a field of `shard::Global`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Acl, AclError, MAX_FILE_BYTES};

/// Shared by every shard; replaced as a whole by [`AclStore::reload`].
#[derive(Debug)]
pub struct AclStore {
    path: PathBuf,
    current: ArcSwap<Acl>,
    generation: AtomicU64,
}

/// Read and parse an ACL file, refusing one over [`MAX_FILE_BYTES`] before reading it all.
pub fn read(path: &Path) -> Result<Acl, AclError> {
    use std::io::Read;
    let read_err = |source| AclError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(AclError::TooLarge);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| AclError::NotUtf8)?;
    Acl::parse(text)
}

impl AclStore {
    /// Load the file at start; an error here stops the broker.
    pub fn load(path: &Path) -> Result<AclStore, AclError> {
        let acl = read(path)?;
        Ok(AclStore {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(acl),
            generation: AtomicU64::new(1),
        })
    }

    /// Re-read the file. Ok: a one-line summary for the log; Err: why the file was
    /// refused (the previous ACL stays in force).
    pub fn reload(&self) -> Result<String, String> {
        match read(&self.path) {
            Ok(acl) => {
                let summary = format!("ACL {}: {}", self.path.display(), acl.summary());
                self.current.store(Arc::new(acl));
                // After the store: a reader that sees the new generation finds the new ACL.
                self.generation.fetch_add(1, Ordering::Release);
                Ok(summary)
            }
            Err(e) => Err(format!("{e}; the previous ACL stays in force")),
        }
    }

    /// Bumped by every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The ACL in force.
    pub fn current(&self) -> Arc<Acl> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::super::Who;
    use super::*;

    #[test]
    fn reload_replaces_and_keeps_old_on_error() {
        let dir = std::env::temp_dir().join(format!("ringmq-acl-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("acl");
        std::fs::write(&file, "all\nallow read a/#\n").unwrap();
        let store = AclStore::load(&file).unwrap();
        let who = Who::new(None, "c");
        assert!(store.current().can_read(&who, "a/b"));
        let g = store.generation();

        std::fs::write(&file, "all\nallow read b/#\n").unwrap();
        let summary = store.reload().unwrap();
        assert!(summary.contains("1 rules"), "{summary}");
        assert!(store.generation() > g);
        assert!(!store.current().can_read(&who, "a/b"));
        assert!(store.current().can_read(&who, "b/x"));

        let g = store.generation();
        std::fs::write(&file, "all\nallow sometimes b/#\n").unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert_eq!(store.generation(), g);
        assert!(store.current().can_read(&who, "b/x"), "old ACL stays");

        std::fs::remove_file(&file).unwrap();
        assert!(store.reload().is_err());
        assert!(store.current().can_read(&who, "b/x"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("ringmq-acl-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("acl");
        std::fs::write(&file, "#".repeat(MAX_FILE_BYTES + 1)).unwrap();
        assert!(matches!(AclStore::load(&file), Err(AclError::TooLarge)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
