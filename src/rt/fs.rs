//! File durability through the reactor: `fdatasync` as an io_uring operation, so a shard
//! never blocks its thread on a disk flush (the durable log's group commit).

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd};

use glommio::io::BufferedFile;

/// A second descriptor on a file, used only to flush it. Owned by one shard.
pub struct SyncHandle(BufferedFile);

impl SyncHandle {
    /// Duplicate `file`'s descriptor for the reactor (the original stays with its owner).
    pub fn new(file: &std::fs::File) -> io::Result<SyncHandle> {
        // SAFETY: dup returns a new descriptor we own, or -1 (checked).
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nothing else; BufferedFile closes it.
        Ok(SyncHandle(unsafe { BufferedFile::from_raw_fd(fd) }))
    }

    /// Flush the file's data (and the metadata needed to read it back) to the device.
    pub async fn fdatasync(&self) -> io::Result<()> {
        self.0.fdatasync().await.map_err(io::Error::from)
    }
}
