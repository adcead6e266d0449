//! Segment files of one shard's log and the thread that makes and removes them.
//!
//! A segment is a fixed-size file `<number>.seg` (12 digits), fallocated to its full size
//! (so writing into the mapping can never hit ENOSPC, which would be a SIGBUS) and mapped
//! shared with its pages populated up front. Making one touches the disk and faults in
//! thousands of pages, which would stall a shard for milliseconds, so each shard has a
//! *segment thread*: the shard asks for the next segment while it still writes the current
//! one, and hands back segments it no longer needs to be unmapped and deleted. The thread
//! fsyncs the directory after every creation and deletion. Segments are never truncated.
//!
//! Owned by one shard's [`super::writer::Journal`]; the thread owns nothing but the files it
//! is working on.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use memmap2::{MmapMut, MmapOptions};

/// One mapped segment.
pub struct Segment {
    pub no: u64,
    pub path: PathBuf,
    pub file: File,
    pub map: MmapMut,
}

/// File name of segment `no`.
pub fn file_name(no: u64) -> String {
    format!("{no:012}.seg")
}

/// Segment files in `dir`, in order: (number, path). Other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if let Ok(no) = stem.parse::<u64>() {
            out.push((no, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// fsync a directory (after creating or deleting files in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How a segment is prepared for its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prep {
    /// For group commit (durability batch/always): zeros written and flushed once, so later
    /// flushes carry data only; pages mapped read-only (the writer's first store to a page
    /// faults once to mark it dirty).
    Flushed,
    /// For durability process: pages faulted in writable here (`MADV_POPULATE_WRITE`), so
    /// the writer never faults; nothing is flushed but at snapshots.
    Writable,
}

/// Create, fallocate and map segment `no` in `dir`. A half-made file is removed on error.
pub fn create(dir: &Path, no: u64, size: usize, prep: Prep) -> io::Result<Segment> {
    let path = dir.join(file_name(no));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let made = (|| {
        // SAFETY: plain syscall on a descriptor we own.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if prep == Prep::Flushed {
            zero_fill(&file, size)?;
        }
        // SAFETY: the file is ours, fallocated to `size`, and never truncated while mapped.
        let map = unsafe { MmapOptions::new().len(size).populate().map_mut(&file)? };
        if prep == Prep::Writable {
            // Best effort (Linux 5.14+): without it the writer takes one fault per page.
            // SAFETY: advice on a mapping we own, within its length.
            let _ = unsafe {
                libc::madvise(map.as_ptr() as *mut libc::c_void, size, MADV_POPULATE_WRITE)
            };
        }
        sync_dir(dir)?;
        Ok(map)
    })();
    match made {
        Ok(map) => Ok(Segment {
            no,
            path,
            file,
            map,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Write zeros over the whole file and flush it once. fallocate leaves *unwritten* extents:
/// the first write to each block would then also change the file's metadata, and every
/// group-commit `fdatasync` would have to commit that to the file system's journal. Written
/// once here, off the shard, later flushes carry data only (the trick databases use for
/// their write-ahead logs).
fn zero_fill(file: &File, size: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let chunk = vec![0u8; (1 << 20).min(size)];
    let mut at = 0;
    while at < size {
        let n = chunk.len().min(size - at);
        file.write_all_at(&chunk[..n], at as u64)?;
        at += n;
    }
    file.sync_data()
}

/// `madvise` advice: fault the range in writable (not in every libc version yet).
const MADV_POPULATE_WRITE: libc::c_int = 23;

enum Job {
    Create(u64),
    Retire(Vec<Segment>),
}

/// The shard's side of its segment thread.
pub struct Maker {
    jobs: Sender<Job>,
    made: Receiver<io::Result<Segment>>,
}

impl Maker {
    /// Start the segment thread for `dir` (segments of `size` bytes).
    pub fn start(shard: usize, dir: PathBuf, size: usize, prep: Prep) -> io::Result<Maker> {
        let (jobs, job_rx) = crossbeam::channel::unbounded::<Job>();
        let (made_tx, made) = crossbeam::channel::unbounded();
        std::thread::Builder::new()
            .name(format!("ringmq-seg-{shard}"))
            .spawn(move || {
                for job in job_rx {
                    match job {
                        Job::Create(no) => {
                            if made_tx.send(create(&dir, no, size, prep)).is_err() {
                                return;
                            }
                        }
                        Job::Retire(segs) => retire(&dir, segs),
                    }
                }
            })?;
        Ok(Maker { jobs, made })
    }

    /// Ask for segment `no` to be made.
    pub fn request(&self, no: u64) {
        let _ = self.jobs.send(Job::Create(no));
    }

    /// The next made segment if it is ready (never blocks).
    pub fn try_take(&self) -> Option<io::Result<Segment>> {
        self.made.try_recv().ok()
    }

    /// Wait for the next made segment (only when the writer ran out of space before the
    /// segment thread kept up; counted by the caller).
    pub fn take_blocking(&self, max: Duration) -> Option<io::Result<Segment>> {
        self.made.recv_timeout(max).ok()
    }

    /// Unmap and delete segments nothing refers to any more.
    pub fn retire(&self, segs: Vec<Segment>) {
        if !segs.is_empty() {
            let _ = self.jobs.send(Job::Retire(segs));
        }
    }
}

fn retire(dir: &Path, segs: Vec<Segment>) {
    for s in segs {
        let path = s.path.clone();
        drop(s);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("journal: cannot delete {}: {e}", path.display());
        }
    }
    if let Err(e) = sync_dir(dir) {
        tracing::error!("journal: cannot fsync {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_segments_are_zeroed_full_size_and_listed_in_order() {
        let dir = std::env::temp_dir().join(format!("ringmq-seg-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m = Maker::start(0, dir.clone(), 1 << 16, Prep::Flushed).unwrap();
        m.request(2);
        m.request(10);
        let a = m.take_blocking(Duration::from_secs(5)).unwrap().unwrap();
        let b = m.take_blocking(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((a.no, b.no), (2, 10));
        assert_eq!(a.map.len(), 1 << 16);
        assert!(a.map.iter().all(|&x| x == 0));
        assert_eq!(std::fs::metadata(&a.path).unwrap().len(), 1 << 16);
        let names: Vec<u64> = list(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![2, 10]);
        assert!(
            create(&dir, 2, 1 << 16, Prep::Writable).is_err(),
            "never overwrite a segment"
        );
        m.retire(vec![a]);
        for _ in 0..100 {
            if list(&dir).unwrap().len() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(list(&dir).unwrap().len(), 1);
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
