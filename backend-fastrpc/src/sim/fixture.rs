//! A whole simulated system (bus, link, DSP thread, channel) and the conformance fixture
//! (feature `fixtures`).

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "fixtures")]
use fwipc_transport_api::fixture::{Fault, Fixture, RemoteControl, SimMode, TagLog};
use fwipc_transport_api::{Completion, StdClock, Wait};

use crate::channel::state::{Bank, ChannelConfig};
use crate::channel::Channel;
use crate::domain::Domain;
use crate::session::CallWait;
use crate::session::Session;
use crate::sim::bus::SimBus;
use crate::sim::dsp::SimDsp;
use crate::sim::link::SimLink;
use crate::sim::objects::{
    calculator, Calculator, EchoObject, KvClient, SkelObject, CALC_HANDLE, ECHO_HANDLE,
    ECHO_RAW_METHOD, KV_HANDLE,
};
use crate::transport::{target, FastRpcTransport};

/// A simulated DSP wired to an AP channel.
pub struct SimSystem {
    /// The bus (SMMU) both sides use.
    pub bus: SimBus,
    /// The datagram link.
    pub link: Arc<SimLink>,
    /// The DSP.
    pub dsp: SimDsp,
    /// The AP channel.
    pub channel: Channel,
    /// The echo object's request log.
    pub seen: Arc<spin::Mutex<TagLog>>,
    /// The clock the sessions of [`SimSystem::wait`] use.
    pub clock: Arc<StdClock>,
}

impl SimSystem {
    /// Build a system: the DSP hosts the echo object at [`ECHO_HANDLE`] and the generated
    /// calculator at [`CALC_HANDLE`]; in interrupt mode the
    /// DSP's answers call the channel's rx path directly, in polled mode they queue.
    pub fn new(cfg: ChannelConfig, completion: Completion) -> Self {
        let bus = SimBus::new();
        let link = SimLink::new();
        let dsp = SimDsp::spawn(link.clone(), bus.clone());
        let seen = Arc::new(spin::Mutex::new(TagLog::new()));
        dsp.add_object(ECHO_HANDLE, Box::new(EchoObject::new(seen.clone())));
        dsp.add_object(KV_HANDLE, Box::new(KvClient));
        dsp.add_object(
            CALC_HANDLE,
            Box::new(SkelObject::new(
                Calculator,
                calculator::calculator_skel_invoke::<Calculator>,
            )),
        );
        let channel = Channel::new(cfg, link.clone(), Arc::new(bus.clone()))
            .expect("valid simulated channel config");
        if completion == Completion::Interrupt {
            link.set_push(channel.rx_handler());
        }
        let ch = channel.clone();
        // A DSP restart is an rpmsg remove followed by a re-probe.
        dsp.set_reset_hook(move || {
            ch.remote_down();
            ch.remote_up();
        });
        SimSystem {
            bus,
            link,
            dsp,
            channel,
            seen,
            clock: Arc::new(StdClock::new()),
        }
    }

    /// The default configuration for the simulated cdsp.
    pub fn default_config() -> ChannelConfig {
        ChannelConfig {
            domain: Domain::Cdsp,
            banks: vec![Bank {
                sid: 1,
                nsessions: 4,
            }],
            contexts: 64,
            payloads_per_session: 16,
            payload_size: 4096,
            max_args: 8,
            secure: false,
        }
    }

    /// How the simulated system's sessions wait: 2 s per call on [`SimSystem::clock`],
    /// yielding the thread between polls (the DSP is another thread).
    pub fn wait(&self) -> CallWait {
        CallWait::new(
            self.clock.clone(),
            Duration::from_secs(2),
            Wait::SpinThenYield {
                spins: 0,
                relax: &fwipc_transport_api::yield_now,
            },
        )
    }

    /// Open a session that waits as [`SimSystem::wait`] says.
    pub fn open_session(&self) -> crate::Result<Session> {
        self.channel.open_session(self.wait())
    }

    /// Open a session and attach it to the root PD.
    pub fn attached_session(&self) -> Session {
        let s = self.open_session().expect("free session");
        s.attach().expect("attach");
        s
    }
}

/// The knobs of the simulated DSP.
#[cfg(feature = "fixtures")]
pub struct SimControl {
    sys: SimSystem,
}

#[cfg(feature = "fixtures")]
impl RemoteControl for SimControl {
    fn set_fault(&self, fault: Fault) {
        self.sys.dsp.set_fault(fault)
    }
    fn release(&self) {
        self.sys.dsp.release()
    }
    fn take_seen_tags(&self) -> Vec<u32> {
        self.sys.seen.lock().take()
    }
    fn received(&self) -> u64 {
        self.sys.dsp.received()
    }
    fn inject_garbage(&self, bytes: &[u8]) {
        self.sys.dsp.inject(bytes)
    }
    fn reset_remote(&self) {
        self.sys.dsp.reset()
    }
    fn notify(&self, _payload: &[u8]) -> bool {
        false
    }
    fn set_sim_mode(&self, mode: SimMode) -> bool {
        self.sys.dsp.set_mode(mode)
    }
    fn step(&self) -> bool {
        self.sys.dsp.step()
    }
}

/// The conformance fixture: a [`FastRpcTransport`] on an attached session of a simulated cdsp.
#[cfg(feature = "fixtures")]
pub struct FastRpcFixture {
    transport: FastRpcTransport,
    control: SimControl,
    completion: Completion,
}

/// Largest conformance payload.
#[cfg(feature = "fixtures")]
pub const FIXTURE_MAX_MSG: usize = 1024;

#[cfg(feature = "fixtures")]
impl FastRpcFixture {
    /// The simulated system behind the fixture.
    pub fn system(&self) -> &SimSystem {
        &self.control.sys
    }
}

#[cfg(feature = "fixtures")]
impl Fixture for FastRpcFixture {
    type T = FastRpcTransport;
    const NAME: &'static str = "fastrpc";

    fn setup(completion: Completion) -> Self {
        let sys = SimSystem::new(SimSystem::default_config(), completion);
        let session = sys.attached_session();
        let transport = FastRpcTransport::new(session, FIXTURE_MAX_MSG).expect("payload fits");
        FastRpcFixture {
            transport,
            control: SimControl { sys },
            completion,
        }
    }

    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt, Completion::Polled]
    }

    fn transport(&self) -> &FastRpcTransport {
        &self.transport
    }

    fn echo_target(&self) -> u32 {
        target(ECHO_HANDLE, ECHO_RAW_METHOD)
    }

    fn completion(&self) -> Completion {
        self.completion
    }

    fn remote(&self) -> &dyn RemoteControl {
        &self.control
    }
}
