//! Spawning `vhost-device-scmi` for a test: its own socket in its own directory, a live pipe as
//! stdout (the `fake` sensor's notification source is fd 1: writing a byte to the pipe makes the
//! daemon send SENSOR_UPDATE notifications), stderr to a log file in that directory, and a `Drop`
//! guard that kills and reaps it.
//!
//! Finding the binary: `$VHOST_DEVICE_SCMI`, else `/opt/fwipc-cache/tools/bin/vhost-device-scmi`,
//! else `vhost-device-scmi` on `PATH`. When none exists the tests skip, except under CI (`$CI`
//! set), where a missing daemon is a failure.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the daemon binary.
pub const DAEMON_ENV: &str = "VHOST_DEVICE_SCMI";
/// Where the project's tool cache installs it.
pub const DEFAULT_DAEMON_PATH: &str = "/opt/fwipc-cache/tools/bin/vhost-device-scmi";

/// Why no daemon could be started.
#[derive(Debug)]
pub enum DaemonError {
    /// The binary is not installed (tests skip, unless under CI).
    NotInstalled(String),
    /// A sensor spec the daemon would mishandle (no name, or longer than 15 bytes).
    BadSensorName(String),
    /// More than one `fake` sensor: each registers fd 1 with the daemon's epoll and the second
    /// registration panics at start-up (EEXIST), as read and reproduced with 0.4.0.
    TooManyFakeSensors,
    /// Spawning or setting up failed.
    Io(io::Error),
    /// The socket did not appear before the deadline (the daemon's stderr is included).
    NoSocket(String),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInstalled(s) => write!(f, "vhost-device-scmi not found: {s}"),
            Self::BadSensorName(s) => write!(f, "bad fake sensor name {s:?} (1..=15 bytes)"),
            Self::TooManyFakeSensors => {
                f.write_str("vhost-device-scmi runs at most one fake sensor")
            }
            Self::Io(e) => write!(f, "daemon I/O: {e}"),
            Self::NoSocket(log) => write!(f, "daemon socket never appeared; stderr:\n{log}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Into the fwipc API error.
impl From<DaemonError> for fwipc_transport_api::Error {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::NotInstalled(_) => fwipc_transport_api::Error::NotSupported,
            DaemonError::BadSensorName(_) | DaemonError::TooManyFakeSensors => {
                fwipc_transport_api::Error::InvalidArgument
            }
            DaemonError::NoSocket(_) => fwipc_transport_api::Error::Timeout,
            DaemonError::Io(_) => fwipc_transport_api::Error::Shutdown,
        }
    }
}

impl From<io::Error> for DaemonError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Locate the daemon binary (see the module docs for the search order).
pub fn find_daemon() -> Result<PathBuf, DaemonError> {
    find_daemon_in(
        std::env::var_os(DAEMON_ENV),
        Path::new(DEFAULT_DAEMON_PATH),
        std::env::var_os("PATH"),
    )
}

/// [`find_daemon`] over explicit inputs: `$VHOST_DEVICE_SCMI` (if set it must exist), the
/// default install path, then `$PATH`.
fn find_daemon_in(
    env: Option<OsString>,
    default: &Path,
    path: Option<OsString>,
) -> Result<PathBuf, DaemonError> {
    if let Some(p) = env {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(DaemonError::NotInstalled(format!(
                "${DAEMON_ENV}={} does not exist",
                p.display()
            )))
        };
    }
    if default.is_file() {
        return Ok(default.to_path_buf());
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("vhost-device-scmi");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(DaemonError::NotInstalled(format!(
        "set ${DAEMON_ENV}, install to {DEFAULT_DAEMON_PATH}, or put it on PATH \
         (cargo install vhost-device-scmi@0.4.0 --locked --root <dir>)"
    )))
}

/// Whether a missing daemon must fail the test rather than skip it (`$CI` set and non-empty).
pub fn daemon_required() -> bool {
    required_by(std::env::var_os("CI"))
}

fn required_by(ci: Option<OsString>) -> bool {
    ci.is_some_and(|v| !v.is_empty())
}

/// A running `vhost-device-scmi`, killed and reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    /// Write end of the daemon's stdout pipe; kept open so the read end never reports
    /// EPOLLHUP/ERR (which kills the daemon's worker).
    notify_tx: File,
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl Daemon {
    /// Start the daemon with a `fake` accelerometer per name (`-d fake,name=<name>`: every sensor
    /// is named, since the daemon's worker dies describing a nameless one), and wait (up to
    /// `timeout`) for its socket. At most one name (see [`DaemonError::TooManyFakeSensors`]); none
    /// gives a daemon with the base protocol only.
    pub fn spawn(sensor_names: &[&str], timeout: Duration) -> Result<Daemon, DaemonError> {
        if sensor_names.len() > 1 {
            return Err(DaemonError::TooManyFakeSensors);
        }
        for n in sensor_names {
            if n.is_empty() || n.len() > 15 || n.contains(',') {
                return Err(DaemonError::BadSensorName((*n).to_string()));
            }
        }
        let bin = find_daemon()?;
        // A unique directory per daemon: the id counter only makes names unique within this
        // process (it carries no other state), the pid across processes.
        // Relaxed: uniqueness needs only atomicity.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fwipc-vhu-{}-{id}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let socket = dir.join("scmi.sock");
        let stderr = File::create(dir.join("daemon.log"))?;
        let (rx, tx) = pipe_cloexec()?;

        let mut cmd = Command::new(&bin);
        cmd.arg("--socket-path").arg(&socket);
        for n in sensor_names {
            cmd.arg("-d").arg(format!("fake,name={n}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(rx))
            .stderr(Stdio::from(stderr));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // SAFETY: the closure only calls prctl, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // If the spawning thread dies without running our Drop (e.g. the test process is
                // killed), the daemon gets SIGKILL instead of lingering.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = cmd.spawn()?;
        let mut d = Daemon {
            child,
            dir,
            socket,
            notify_tx: File::from(tx),
        };
        let deadline = Instant::now() + timeout;
        while !d.socket.exists() {
            if Instant::now() >= deadline || !d.is_alive() {
                return Err(DaemonError::NoSocket(d.log()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(d)
    }

    /// The vhost-user socket the daemon listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Make the daemon's notification source readable: every `fake` sensor with notifications
    /// enabled then sends SENSOR_UPDATE on each posted eventq buffer. The daemon never reads the
    /// pipe (its epoll is level-triggered), so after this it keeps using up eventq buffers as fast
    /// as they are posted; tear it down after such a test.
    pub fn trigger_notification(&mut self) -> io::Result<()> {
        self.notify_tx.write_all(&[1])
    }

    /// Freeze the daemon (SIGSTOP): it accepts kicks but answers nothing until [`Self::resume`].
    /// This is how the tests make a real device *hold* requests (pool exhaustion, teardown with
    /// requests in flight).
    ///
    /// Returns once every thread of the daemon is stopped (SIGSTOP is asynchronous: a thread
    /// running on another CPU could otherwise still serve a request sent after `pause`).
    pub fn pause(&mut self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.all_threads_stopped()? {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "daemon did not stop after SIGSTOP",
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// Whether every task of the process is in state `T` (stopped), per `/proc/<pid>/task/*/stat`.
    fn all_threads_stopped(&self) -> io::Result<bool> {
        for task in fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let stat = match fs::read_to_string(task?.path().join("stat")) {
                Ok(s) => s,
                // A thread that exited meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // "pid (comm) S ...": the state follows the last ')' (comm may contain spaces).
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            if state != Some('T') {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Let a paused daemon run again (SIGCONT); it then answers everything it was kicked for.
    pub fn resume(&mut self) -> io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&mut self, sig: libc::c_int) -> io::Result<()> {
        if !self.is_alive() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "daemon exited"));
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: plain kill(2) to our own child, which is alive and not yet reaped (checked
        // above under `&mut self`, and only `Drop` reaps it), so the pid cannot be recycled.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Kill and reap the daemon now (also done on drop). Use it before releasing guest memory
    /// the daemon may still write: vhost-device-scmi keeps eventq chains across a ring stop and
    /// keeps filling them while its notification source (the stdout pipe) is readable.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.is_alive() {
            self.child.kill()?;
        }
        self.child.wait().map(|_| ())
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fwipc-find-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn search_order_env_then_default_then_path() {
        let d = scratch("order");
        let env_bin = d.join("from-env");
        let default_bin = d.join("default");
        let path_dir = d.join("bin");
        fs::create_dir_all(&path_dir).unwrap();
        let path_bin = path_dir.join("vhost-device-scmi");
        for f in [&env_bin, &default_bin, &path_bin] {
            File::create(f).unwrap();
        }
        let path = Some(OsString::from(format!(
            "/nonexistent:{}",
            path_dir.display()
        )));
        let found = |env: Option<&Path>, default: &Path| {
            find_daemon_in(env.map(|p| p.as_os_str().to_owned()), default, path.clone())
        };
        assert_eq!(found(Some(&env_bin), &default_bin).unwrap(), env_bin);
        assert_eq!(found(None, &default_bin).unwrap(), default_bin);
        assert_eq!(found(None, &d.join("missing")).unwrap(), path_bin);
        // An explicit but wrong $VHOST_DEVICE_SCMI is an error, not a fallback.
        assert!(matches!(
            found(Some(&d.join("typo")), &default_bin),
            Err(DaemonError::NotInstalled(_))
        ));
        assert!(matches!(
            find_daemon_in(None, &d.join("missing"), None),
            Err(DaemonError::NotInstalled(_))
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ci_makes_the_daemon_required() {
        assert!(!required_by(None));
        assert!(!required_by(Some(OsString::new())));
        assert!(required_by(Some(OsString::from("true"))));
    }
}
