//! Our daemon as a child process (the binary this package builds, `CARGO_BIN_EXE_*`), and fwipc's
//! unmodified SCMI agent (`Scmi` over `ScmiVirtio<MemfdHal, VhostUserTransport>`) connected to
//! it through the vhost-user harness, with an interrupt thread running
//! `ScmiVirtio::complete()` (the VMM's interrupt), as `harness-vhost-user`'s own fixture does for
//! vhost-device-scmi.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwipc_scmi_virtio::protocol::{Config as AgentConfig, Scmi};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::{Completion, StdClock, Transport};
use harness_vhost_user::{shared_memory, IrqThread, MemfdHal, VhostUserTransport};

/// Bound on every wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon binary under test.
pub const DAEMON: &str = env!("CARGO_BIN_EXE_fwipc-scmi-vhost");

/// A configuration file of this package.
pub fn config_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

pub type Chan = ScmiVirtio<MemfdHal, VhostUserTransport>;
pub type Agent = Scmi<Chan, StdClock>;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running `fwipc-scmi-vhost`, killed and reaped on drop.
pub struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    /// Start the daemon on `config` in a fresh directory and wait for its socket.
    pub fn spawn(config: &Path) -> io::Result<Daemon> {
        // Unique per test process (pid) and per daemon within it (counter; Relaxed: only
        // uniqueness is needed).
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fwipc-scmi-vhost-{}-{id}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let socket = dir.join("scmi.sock");
        let log = File::create(dir.join("daemon.log"))?;
        let mut cmd = Command::new(DAEMON);
        cmd.arg("--socket-path")
            .arg(&socket)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // SAFETY: the closure only calls prctl, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // The daemon dies with the test process even if no Drop runs.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = cmd.spawn()?;
        let mut d = Daemon { child, dir, socket };
        let deadline = Instant::now() + TIMEOUT;
        while !d.socket.exists() {
            if Instant::now() >= deadline || d.exited().is_some() {
                return Err(io::Error::other(format!(
                    "daemon socket never appeared; log:\n{}",
                    d.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(d)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The exit status, if the daemon has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait (bounded) for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill it now (SIGKILL) and reap it.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.exited().is_none() {
            self.child.kill()?;
        }
        self.child.wait().map(|_| ())
    }

    /// What the daemon logged so far.
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

/// The agent's configuration: bounded waits, interrupt completion (the irq thread completes).
pub fn agent_config() -> AgentConfig {
    let mut c = AgentConfig::default().with_timeouts(TIMEOUT, TIMEOUT);
    c.completion = Completion::Interrupt;
    c.wait = fwipc_transport_api::Wait::SpinThenYield {
        spins: 64,
        relax: &std::thread::yield_now,
    };
    c
}

/// Our daemon, and fwipc's agent connected to it.
pub struct Fixture {
    irq: Option<IrqThread>,
    agent: Option<Arc<Agent>>,
    pub daemon: Daemon,
}

impl Fixture {
    /// Start the daemon on the package's configuration file `config` and connect the agent.
    pub fn start(config: &str) -> Fixture {
        let daemon = Daemon::spawn(&config_path(config)).expect("start fwipc-scmi-vhost");
        let vt = VhostUserTransport::connect(daemon.socket(), shared_memory(), TIMEOUT)
            .unwrap_or_else(|e| panic!("vhost-user connect: {e}; log:\n{}", daemon.log()));
        let irqs = vt.interrupts().expect("call eventfds");
        let chan = ScmiVirtio::<MemfdHal, _>::new(vt, ScmiVirtioConfig::default())
            .unwrap_or_else(|e| panic!("ScmiVirtio::new: {e}; log:\n{}", daemon.log()));
        let agent = Arc::new(Scmi::new(chan, StdClock::new(), agent_config()).expect("agent"));
        let a = agent.clone();
        let irq = irqs
            .spawn(None, move |_| a.transport().complete())
            .expect("irq thread");
        Fixture {
            irq: Some(irq),
            agent: Some(agent),
            daemon,
        }
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_deref().expect("agent")
    }

    /// The agent, to use from other threads while the fixture is changed (e.g. the daemon
    /// killed).
    pub fn shared_agent(&self) -> Arc<Agent> {
        self.agent.clone().expect("agent")
    }

    /// Disconnect the front-end gracefully (interrupts off, channel shut down, socket closed)
    /// and return how the daemon exited.
    pub fn disconnect(mut self) -> Option<ExitStatus> {
        self.irq.take();
        if let Some(agent) = self.agent.take() {
            agent.transport().shutdown().expect("channel shutdown");
            drop(agent);
        }
        self.daemon.wait_exit(TIMEOUT)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Interrupts off; the daemon goes (killed by its own Drop, after the channel's: fields
        // drop in order, so kill it first here), then the channel frees its memory.
        self.irq.take();
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }
}
