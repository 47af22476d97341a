//! The unmodified fwipc SCMI backend (`ScmiVirtio` + the `Scmi` agent) on the harness: the
//! virtio transport is the vhost-user front-end, the Hal is `MemfdHal`, and in interrupt mode a
//! thread waiting on the call eventfds runs `ScmiVirtio::complete()` (the VMM's interrupt).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fwipc_scmi_virtio::protocol::{Config as AgentConfig, Scmi};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::{Completion, StdClock};
use harness_vhost_user::{shared_memory, Daemon, IrqThread, MemfdHal, VhostUserTransport};

use super::scenarios::DaemonFixture;
use super::TIMEOUT;

pub type Chan = ScmiVirtio<MemfdHal, VhostUserTransport>;
pub type Agent = Scmi<Chan, StdClock>;

/// Reply wait of the vhost-user control socket while the daemon is frozen: teardown must not
/// wait the default 5 s for GET_VRING_BASE.
const FROZEN_REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// One daemon, one backend channel, one agent. On drop: the interrupt thread stops, the daemon is
/// killed, then the agent and channel shut down.
pub struct BackendFixture {
    irq: Option<IrqThread>,
    pub agent: Arc<Agent>,
    daemon: Mutex<Daemon>,
    mode: Completion,
}

/// The agent's configuration: bounded waits, and requests in the fixture's completion mode (a
/// polled agent drains the cmdq itself; an interrupt-mode one relies on the irq thread).
pub fn agent_config(mode: Completion) -> AgentConfig {
    let mut c = AgentConfig::default().with_timeouts(TIMEOUT, TIMEOUT);
    c.completion = mode;
    c.wait = fwipc_transport_api::Wait::SpinThenYield {
        spins: 64,
        relax: &std::thread::yield_now,
    };
    c
}

impl BackendFixture {
    /// A daemon with one fake sensor `acc0`, and the backend connected to it.
    pub fn start(mode: Completion, cfg: ScmiVirtioConfig) -> Option<Self> {
        let daemon = super::daemon(&["acc0"])?;
        let vt = VhostUserTransport::connect(daemon.socket(), shared_memory(), TIMEOUT)
            .expect("vhost-user connect");
        let irqs = vt.interrupts().expect("call eventfds");
        // Polled, nothing calls `complete`: say so (no `SeqCst` fence per channel-lock
        // release). The transport then also asks the daemon for no interrupts, which
        // vhost-device-scmi 0.4 does not honour: it signals the call eventfd after every batch
        // of requests whatever `used_event` says (`process_command_queue`); nothing reads that
        // eventfd here.
        let cfg = ScmiVirtioConfig {
            interrupts: cfg.interrupts && mode == Completion::Interrupt,
            ..cfg
        };
        let chan = ScmiVirtio::<MemfdHal, _>::new(vt, cfg)
            .unwrap_or_else(|e| panic!("ScmiVirtio::new on vhost-device-scmi: {e}"));
        chan.with_transport(|t| assert!(t.error().is_none(), "{:?}", t.error()));
        let agent = Arc::new(Scmi::new(chan, StdClock::new(), agent_config(mode)).expect("agent"));
        let irq = match mode {
            Completion::Interrupt => {
                let a = agent.clone();
                Some(
                    irqs.spawn(None, move |_| a.transport().complete())
                        .expect("irq thread"),
                )
            }
            Completion::Polled => None,
        };
        Some(BackendFixture {
            irq,
            agent,
            daemon: Mutex::new(daemon),
            mode,
        })
    }

    pub fn daemon(&self) -> MutexGuard<'_, Daemon> {
        self.daemon.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn chan(&self) -> &Chan {
        self.agent.transport()
    }

    /// Whether interrupts are delivered by a thread.
    pub fn has_irq_thread(&self) -> bool {
        self.irq.is_some()
    }
}

impl Drop for BackendFixture {
    fn drop(&mut self) {
        // Interrupts off, then the daemon dies *before* the channel frees its rings and buffers:
        // vhost-device-scmi keeps eventq chains across a ring stop and may still fill them (see
        // `Daemon::kill`). The channel's own shutdown then runs against a dead peer. Graceful
        // teardown against a live daemon is tested explicitly (`backend_teardown_and_reconnect`,
        // `conformance_teardown_in_flight`).
        self.irq.take();
        if let Err(e) = self.daemon().kill() {
            eprintln!("killing the daemon: {e}");
        }
    }
}

impl DaemonFixture for BackendFixture {
    type T = Chan;

    fn setup(mode: Completion) -> Option<Self> {
        BackendFixture::start(mode, ScmiVirtioConfig::default())
    }

    fn transport(&self) -> &Chan {
        self.chan()
    }

    fn mode(&self) -> Completion {
        self.mode
    }

    fn hold(&self) {
        self.chan()
            .with_transport(|t| t.set_reply_timeout(FROZEN_REPLY_TIMEOUT));
        self.daemon().pause().expect("SIGSTOP daemon");
    }

    fn release(&self) {
        self.daemon().resume().expect("SIGCONT daemon");
        self.chan().with_transport(|t| t.set_reply_timeout(TIMEOUT));
    }
}
