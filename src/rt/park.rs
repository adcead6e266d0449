//! Parking idle connections: a connection that has been silent for a while gives up its
//! tasks and its reactor source, and its socket is watched by one per-shard epoll set
//! instead. That is what makes an idle connection cost a few hundred bytes rather than a
//! few kilobytes (two task frames and a glommio poll source each).
//!
//! glommio cannot await an arbitrary fd, so the epoll set is bridged into the shard's
//! reactor: a tiny private io_uring holds one POLL_ADD on the epoll fd and signals an
//! eventfd when it completes; the shard awaits that eventfd with an ordinary glommio file
//! read. Each parked socket is registered `EPOLLONESHOT`, so it reports once and stays quiet
//! until it is unparked (removed) by its shard.
//!
//! Owned by one shard; never touched by another thread.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use glommio::io::BufferedFile;
use io_uring::{opcode, types, IoUring};

/// Keys reported per readiness round (more wait for the next round).
const EVENTS: usize = 256;
/// user_data of the ring's only operation.
const POLL_TOKEN: u64 = 1;

/// One shard's parking lot.
pub struct Parking {
    epoll: OwnedFd,
    ring: RefCell<IoUring>,
    /// Signalled by the ring whenever a completion is posted.
    _eventfd: OwnedFd,
    /// The same eventfd, as glommio sees it (read to wait for a signal).
    waiter: BufferedFile,
    /// The POLL_ADD on the epoll fd is pending in the ring.
    armed: Cell<bool>,
    parked: Cell<usize>,
}

impl Parking {
    pub fn new() -> io::Result<Parking> {
        // SAFETY: plain syscalls; every returned fd is checked and owned right away.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if ep < 0 {
                return Err(io::Error::last_os_error());
            }
            let epoll = OwnedFd::from_raw_fd(ep);
            let ev = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if ev < 0 {
                return Err(io::Error::last_os_error());
            }
            let eventfd = OwnedFd::from_raw_fd(ev);
            let ring = IoUring::new(4)?;
            ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
            let dup = libc::dup(ev);
            if dup < 0 {
                return Err(io::Error::last_os_error());
            }
            let waiter = BufferedFile::from_raw_fd(dup);
            Ok(Parking {
                epoll,
                ring: RefCell::new(ring),
                _eventfd: eventfd,
                waiter,
                armed: Cell::new(false),
                parked: Cell::new(0),
            })
        }
    }

    /// Watch `fd` for input (or hang-up); `key` comes back from [`Parking::ready`].
    pub fn park(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: key,
        };
        // SAFETY: valid epoll fd and event struct.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        self.parked.set(self.parked.get() + 1);
        Ok(())
    }

    /// Stop watching `fd` (before it is read again or closed).
    pub fn unpark(&self, fd: RawFd) {
        // SAFETY: valid epoll fd; a missing fd is reported as an error and ignored.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            self.parked.set(self.parked.get().saturating_sub(1));
        }
    }

    /// Connections parked right now.
    pub fn parked(&self) -> usize {
        self.parked.get()
    }

    /// Wait until at least one parked socket is readable; its key is appended to `keys`.
    pub async fn ready(&self, keys: &mut Vec<u64>) -> io::Result<()> {
        // In the (one per shard) parking task's frame: no allocation per readiness round.
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: valid epoll fd and a buffer of EVENTS entries; timeout 0 = no wait.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n > 0 {
                keys.extend(events[..n as usize].iter().map(|e| e.u64));
                return Ok(());
            }
            // A wait cancelled by the caller may have left a completion unseen: reap it
            // first, or `armed` would claim a poll that no longer exists.
            self.reap();
            if !self.armed.get() {
                let poll =
                    opcode::PollAdd::new(types::Fd(self.epoll.as_raw_fd()), libc::POLLIN as u32)
                        .build()
                        .user_data(POLL_TOKEN);
                let mut ring = self.ring.borrow_mut();
                // SAFETY: the entry refers only to the epoll fd, which outlives the ring op
                // (both are owned by self; the ring is dropped first, cancelling it).
                unsafe {
                    ring.submission()
                        .push(&poll)
                        .map_err(|_| io::Error::other("parking ring full"))?;
                }
                ring.submit()?;
                self.armed.set(true);
            }
            // Wait for the ring's completion signal, then consume it.
            let _ = self.waiter.read_at(0, 8).await?;
            self.reap();
        }
    }

    fn reap(&self) {
        let mut ring = self.ring.borrow_mut();
        for cqe in ring.completion() {
            if cqe.user_data() == POLL_TOKEN {
                self.armed.set(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_parked_socket_reports_its_key_when_data_arrives() {
        glommio::LocalExecutor::default().run(async {
            let p = Parking::new().expect("parking");
            let (a, mut b) = UnixStream::pair().expect("pair");
            let (c, _d) = UnixStream::pair().expect("pair");
            p.park(a.as_raw_fd(), 7).expect("park a");
            p.park(c.as_raw_fd(), 9).expect("park c");
            assert_eq!(p.parked(), 2);
            let writer = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                b.write_all(b"x").expect("write");
                b
            });
            let mut keys = Vec::new();
            p.ready(&mut keys).await.expect("ready");
            assert_eq!(keys, [7]);
            p.unpark(a.as_raw_fd());
            p.unpark(c.as_raw_fd());
            assert_eq!(p.parked(), 0);
            drop(writer.join());
        });
    }
}
