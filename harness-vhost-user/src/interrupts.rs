//! The harness's interrupt controller: waiting on the vhost-user call eventfds (the back-end's
//! "used buffer" signals) and running a handler, the way a VMM injects an interrupt that the
//! guest's driver then services. The vhost-user socket is watched too: a back-end that exits or
//! closes the connection is reported once as [`Interrupts::DISCONNECTED`], the way a device raises
//! a configuration-change interrupt with `DEVICE_NEEDS_RESET` (virtio 1.2 §2.1.2).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Non-blocking read of an eventfd; returns the count (0 if it was not signalled).
pub(crate) fn drain(evt: &EventFd) -> u64 {
    evt.read().unwrap_or(0)
}

/// `poll(2)` for readability on `fds` for at most `timeout`; the number of readable fds.
pub(crate) fn poll_fds(fds: &[RawFd], timeout: Duration) -> io::Result<usize> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&fd| pollfd(fd, libc::POLLIN)).collect();
    poll_raw(&mut pfds, timeout)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` on prepared entries (their `revents` are filled in), retrying on `EINTR`.
fn poll_raw(pfds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()` pollfd structs.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What a hang-up of a vhost-user socket looks like to `poll(2)`: the peer closed or shut down
/// its end (`POLLRDHUP`/`POLLHUP`), or the socket failed (`POLLERR`). Readability alone is not
/// one: the front-end negotiates no back-end requests, but a stray byte is no reason to give up.
const HANGUP: libc::c_short = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;

/// Whether the vhost-user connection on `socket` is gone (the back-end exited, closed it, or the
/// reply watchdog shut it down). Does not block.
pub(crate) fn hung_up(socket: RawFd) -> io::Result<bool> {
    let mut p = [pollfd(socket, libc::POLLRDHUP)];
    poll_raw(&mut p, Duration::ZERO)?;
    Ok(p[0].revents & HANGUP != 0)
}

/// The call eventfds of one transport (cloned, so they outlive nothing), its vhost-user socket
/// (watched for a hang-up), plus a stop eventfd.
#[derive(Debug)]
pub struct Interrupts {
    calls: Vec<EventFd>,
    socket: Option<UnixStream>,
    /// The socket's hang-up was reported: it is not watched any more (a hung-up socket stays
    /// ready, so watching it would turn every wait into a busy loop).
    hangup_reported: AtomicBool,
    stop: EventFd,
}

impl Interrupts {
    /// The bit of [`Interrupts::wait`]'s mask that reports the vhost-user connection gone: the
    /// handler should run the driver's interrupt path, whose acknowledgement then reports a
    /// configuration change with `DEVICE_NEEDS_RESET` (see `VhostUserTransport`).
    pub const DISCONNECTED: u32 = 1 << 31;

    pub(crate) fn new(calls: Vec<EventFd>, socket: Option<UnixStream>) -> io::Result<Self> {
        Ok(Interrupts {
            calls,
            socket,
            hangup_reported: AtomicBool::new(false),
            stop: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Wait up to `timeout` for any queue to be signalled or the connection to hang up; returns a
    /// bit mask of the signalled queues (bit i = queue i, for queues 0 to 30), consuming the signals, plus
    /// [`Interrupts::DISCONNECTED`] the first time the connection is seen gone. 0 on timeout or
    /// stop.
    pub fn wait(&self, timeout: Duration) -> io::Result<u32> {
        let mut pfds: Vec<libc::pollfd> = self
            .calls
            .iter()
            .map(|e| pollfd(e.as_raw_fd(), libc::POLLIN))
            .collect();
        pfds.push(pollfd(self.stop.as_raw_fd(), libc::POLLIN));
        // Relaxed: only this handle reads and writes the flag, and it is not shared.
        let watch = self
            .socket
            .as_ref()
            .filter(|_| !self.hangup_reported.load(Ordering::Relaxed));
        if let Some(s) = watch {
            pfds.push(pollfd(s.as_raw_fd(), libc::POLLRDHUP));
        }
        poll_raw(&mut pfds, timeout)?;
        let mut mask = 0;
        for (i, c) in self.calls.iter().enumerate() {
            // Queues from 31 up have no bit of their own (bit 31 is `DISCONNECTED`); they are
            // still drained, and the handler runs for the other bits or the next tick.
            if drain(c) != 0 && i < 31 {
                mask |= 1 << i;
            }
        }
        if watch.is_some() && pfds.last().is_some_and(|p| p.revents & HANGUP != 0) {
            // Relaxed: see above.
            self.hangup_reported.store(true, Ordering::Relaxed);
            mask |= Self::DISCONNECTED;
        }
        Ok(mask)
    }

    /// Run `handler(mask)` on a new thread every time a queue is signalled, until the returned
    /// [`IrqThread`] is dropped. The handler also runs every `tick` even without a signal (a
    /// safety net the tests do not depend on: pass `None` to disable it).
    pub fn spawn<F>(self, tick: Option<Duration>, handler: F) -> io::Result<IrqThread>
    where
        F: Fn(u32) + Send + 'static,
    {
        let stop_flag = Arc::new(AtomicBool::new(false));
        let stop_evt = self.stop.try_clone()?;
        let flag = stop_flag.clone();
        let join = std::thread::Builder::new()
            .name("harness-irq".into())
            .spawn(move || {
                let period = tick.unwrap_or(Duration::from_millis(200));
                // Acquire: pairs with the Release store in `IrqThread::drop`, so the handler is
                // never run after the owner considers the thread stopped.
                while !flag.load(Ordering::Acquire) {
                    match self.wait(period) {
                        Ok(0) if tick.is_none() => {}
                        Ok(mask) => handler(mask),
                        Err(e) => {
                            log::error!("irq thread: poll failed: {e}");
                            break;
                        }
                    }
                }
            })?;
        Ok(IrqThread {
            stop_flag,
            stop_evt,
            join: Some(join),
        })
    }
}

/// A thread delivering "interrupts" to a handler; stopped and joined on drop.
#[derive(Debug)]
pub struct IrqThread {
    stop_flag: Arc<AtomicBool>,
    stop_evt: EventFd,
    join: Option<JoinHandle<()>>,
}

impl Drop for IrqThread {
    fn drop(&mut self) {
        // Release: see the Acquire load in the thread loop.
        self.stop_flag.store(true, Ordering::Release);
        let _ = self.stop_evt.write(1);
        if let Some(j) = self.join.take() {
            if j.join().is_err() {
                log::error!("irq handler panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn wait_reports_signalled_queues_and_times_out() {
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let b = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq =
            Interrupts::new(vec![a.try_clone().unwrap(), b.try_clone().unwrap()], None).unwrap();
        let t0 = Instant::now();
        assert_eq!(irq.wait(Duration::from_millis(30)).unwrap(), 0);
        assert!(
            t0.elapsed() >= Duration::from_millis(25),
            "waited for the timeout"
        );
        b.write(3).unwrap();
        assert_eq!(irq.wait(Duration::from_secs(5)).unwrap(), 0b10);
        assert_eq!(irq.wait(Duration::ZERO).unwrap(), 0, "signal consumed");
        a.write(1).unwrap();
        b.write(1).unwrap();
        assert_eq!(irq.wait(Duration::from_secs(5)).unwrap(), 0b11);
    }

    #[test]
    fn wait_reports_a_hang_up_once_and_does_not_spin_on_it() {
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let (ours, peer) = UnixStream::pair().unwrap();
        assert!(!hung_up(ours.as_raw_fd()).unwrap());
        let irq = Interrupts::new(vec![a.try_clone().unwrap()], Some(ours)).unwrap();
        assert_eq!(irq.wait(Duration::from_millis(20)).unwrap(), 0, "alive");
        drop(peer);
        let t0 = Instant::now();
        assert_eq!(
            irq.wait(Duration::from_secs(5)).unwrap(),
            Interrupts::DISCONNECTED
        );
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "woken by the hang-up"
        );
        // Reported once: the next wait sleeps out its timeout instead of returning at once.
        let t0 = Instant::now();
        assert_eq!(irq.wait(Duration::from_millis(30)).unwrap(), 0);
        assert!(t0.elapsed() >= Duration::from_millis(25), "not a busy loop");
        a.write(1).unwrap();
        assert_eq!(
            irq.wait(Duration::from_secs(5)).unwrap(),
            1,
            "queues still served"
        );
    }

    #[test]
    fn irq_thread_runs_handler_per_signal_and_stops_on_drop() {
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Interrupts::new(vec![a.try_clone().unwrap()], None).unwrap();
        let (tx, rx) = mpsc::channel();
        let th = irq.spawn(None, move |mask| tx.send(mask).unwrap()).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "no signal, no call"
        );
        a.write(1).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        let t0 = Instant::now();
        drop(th);
        assert!(t0.elapsed() < Duration::from_secs(1), "stop is prompt");
        // The handler (and its sender) is gone with the thread.
        assert!(rx.recv_timeout(Duration::from_millis(10)).is_err());
    }
}
