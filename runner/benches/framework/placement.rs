//! Where (c)'s threads run: [`Placed::pin`] puts the calling thread on one core and every other
//! thread of the process on the others, until the guard is dropped.
//!
//! Left to itself, the Linux scheduler now and then places both sides of a parked pair on one
//! core (a thread that wakes another is often given the waker's core) and keeps them there for
//! seconds while they hand off through yields rather than sleeps: each hand-off then waits for
//! a spin phase to run out on the core's one thread (a short one, once the waiter's
//! `SpinBudget` has learned it shares the core, but not none). Pinning the two sides apart is the
//! placement of a driver talking to firmware on its own core, and it makes runs comparable.
//! Hand-written with `sched_setaffinity` (through `libc`): the affinity crates of crates.io set
//! only the calling thread's mask, and the other threads here belong to the simulators.

/// While alive, the calling thread runs on one core and every other thread of the process on
/// the rest; dropping it gives every thread the whole set again.
pub struct Placed {
    #[cfg(target_os = "linux")]
    all: libc::cpu_set_t,
    #[cfg(target_os = "linux")]
    caller: usize,
}

#[cfg(target_os = "linux")]
impl Placed {
    /// Pin the threads, or say why not (fewer than two cores allowed, not Linux).
    pub fn pin() -> Result<Placed, String> {
        // SAFETY: an all-zero `cpu_set_t` is the empty set.
        let mut all: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: `all` is a `cpu_set_t` of the size given; 0 names the calling thread.
        if unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut all) }
            != 0
        {
            return Err(format!(
                "sched_getaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` is below `CPU_SETSIZE`, inside the set.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &all) })
            .collect();
        let [caller, ..] = cpus[..] else {
            return Err("no core is allowed".into());
        };
        if cpus.len() < 2 {
            return Err("one core is allowed to this process".into());
        }
        let mut own = empty();
        let mut rest = all;
        // SAFETY: `caller` is below `CPU_SETSIZE`.
        unsafe {
            libc::CPU_SET(caller, &mut own);
            libc::CPU_CLR(caller, &mut rest);
        }
        // SAFETY: `gettid` has no preconditions.
        let me = unsafe { libc::gettid() };
        let placed = Placed { all, caller };
        for tid in threads()? {
            set(tid, if tid == me { &own } else { &rest })?;
        }
        Ok(placed)
    }

    /// The calling thread's core and the others', in words.
    pub fn describe(&self) -> String {
        format!(
            "core {} and every other thread on the other cores",
            self.caller
        )
    }
}

#[cfg(target_os = "linux")]
impl Drop for Placed {
    fn drop(&mut self) {
        if let Ok(tids) = threads() {
            for tid in tids {
                // A thread that ended meanwhile has nothing to restore.
                let _ = set(tid, &self.all);
            }
        }
    }
}

/// The empty CPU set.
#[cfg(target_os = "linux")]
fn empty() -> libc::cpu_set_t {
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    unsafe { core::mem::zeroed() }
}

/// The thread ids of this process, from `/proc/self/task`.
#[cfg(target_os = "linux")]
fn threads() -> Result<Vec<libc::pid_t>, String> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// Give thread `tid` the CPU set `cpus`. A thread that ended since it was listed is not an
/// error.
#[cfg(target_os = "linux")]
fn set(tid: libc::pid_t, cpus: &libc::cpu_set_t) -> Result<(), String> {
    // SAFETY: `cpus` is a `cpu_set_t` of the size given.
    if unsafe { libc::sched_setaffinity(tid, core::mem::size_of::<libc::cpu_set_t>(), cpus) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(format!("sched_setaffinity of thread {tid}: {e}"))
}

#[cfg(not(target_os = "linux"))]
impl Placed {
    /// Placement is Linux-only here.
    pub fn pin() -> Result<Placed, String> {
        Err("placing threads on cores is implemented for Linux only".into())
    }

    /// Nothing is placed.
    pub fn describe(&self) -> String {
        String::new()
    }
}
