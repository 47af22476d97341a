//! The conformance fixture: a [`SimPair`] with the [`EchoService`] on the simulated VideoCore and
//! a [`VchiqTransport`] on the ARM side.

use std::sync::Arc;
use std::time::Duration;

use fwipc_transport_api::fixture::{DatagramPeer, Fault, Fixture, RemoteControl, SimMode};
use fwipc_transport_api::{Clock, Completion, Datagram, Error, StdClock};

use super::framed_echo::{EchoService, ECHO_FOURCC};
use super::SimPair;
use crate::config::Config;
use crate::engine::service::ServiceParams;
use crate::transport::VchiqTransport;

/// Transfers in flight at once through the fixture's transport.
pub const FIXTURE_MAX_MSG: usize = 32;

/// The VCHIQ conformance fixture.
pub struct VchiqFixture {
    // Field order: the transport shuts down before the pair stops its workers.
    transport: VchiqTransport,
    echo: Arc<EchoService>,
    pair: SimPair,
    completion: Completion,
}

impl VchiqFixture {
    /// Build, or explain why not.
    pub fn try_setup(completion: Completion) -> crate::Result<Self> {
        Self::try_setup_with_clock(completion, Box::new(StdClock::new()))
    }

    /// Like [`VchiqFixture::try_setup`], the transport's side reading `clock` (see
    /// [`SimPair::with_slave_clock`]): tests of what expires (a slot loan, a wait) move a
    /// [`fwipc_transport_api::ManualClock`] instead of sleeping.
    pub fn try_setup_with_clock(
        completion: Completion,
        clock: Box<dyn Clock + Send + Sync>,
    ) -> crate::Result<Self> {
        let pair = SimPair::with_slave_clock(
            Config::default().with_wait(super::SIM_WAIT),
            completion == Completion::Interrupt,
            clock,
        )?;
        let (echo, _) =
            EchoService::add_to(pair.master(), ServiceParams::new(ECHO_FOURCC).version(3, 2))?;

        pair.connect()?;
        let transport = VchiqTransport::open(
            pair.slave().clone(),
            // Slot quota: as many slots as the data quota allows (clamped by the core).
            ServiceParams::new(ECHO_FOURCC)
                .version(3, 3)
                .quotas(u32::MAX, 0),
            completion,
            FIXTURE_MAX_MSG,
            Duration::from_secs(5),
        )
        .map_err(|_| crate::VchiqError::Timeout)?;
        Ok(VchiqFixture {
            transport,
            echo,
            pair,
            completion,
        })
    }

    /// The simulated pair.
    pub fn pair(&self) -> &SimPair {
        &self.pair
    }
}

impl Fixture for VchiqFixture {
    type T = VchiqTransport;
    const NAME: &'static str = "vchiq";

    fn setup(completion: Completion) -> Self {
        Self::try_setup(completion).expect("vchiq fixture setup")
    }

    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt, Completion::Polled]
    }

    fn transport(&self) -> &VchiqTransport {
        &self.transport
    }

    fn echo_target(&self) -> u32 {
        ECHO_FOURCC
    }

    fn completion(&self) -> Completion {
        self.completion
    }

    fn remote(&self) -> &dyn RemoteControl {
        self
    }

    fn datagram(&self) -> Option<(&dyn Datagram, &dyn DatagramPeer)> {
        Some((&self.transport, self))
    }
}

/// The echo service's side of the one-way messages (`transport/datagram.rs`): its endpoint is
/// the service's fourcc.
impl DatagramPeer for VchiqFixture {
    fn addr(&self) -> u32 {
        ECHO_FOURCC
    }

    fn send(&self, dst: u32, payload: &[u8]) -> fwipc_transport_api::Result<()> {
        if dst != ECHO_FOURCC {
            return Err(Error::InvalidArgument);
        }
        self.echo
            .send_one_way(self.pair.master(), payload)
            .map_err(Error::from)
    }

    fn take_received(&self) -> Vec<(u32, Vec<u8>)> {
        self.echo
            .take_one_way()
            .into_iter()
            .map(|p| (ECHO_FOURCC, p))
            .collect()
    }
}

impl RemoteControl for VchiqFixture {
    fn set_fault(&self, fault: Fault) {
        self.echo.set_fault(fault);
    }
    fn release(&self) {
        self.echo.release(self.pair.master());
    }
    fn take_seen_tags(&self) -> Vec<u32> {
        self.echo.take_seen_tags()
    }
    fn received(&self) -> u64 {
        self.echo.received()
    }
    fn inject_garbage(&self, bytes: &[u8]) {
        self.echo.inject_garbage(self.pair.master(), bytes);
    }
    fn reset_remote(&self) {
        self.echo.reset(self.pair.master());
    }
    fn notify(&self, payload: &[u8]) -> bool {
        self.echo.notify(self.pair.master(), payload)
    }
    fn set_sim_mode(&self, mode: SimMode) -> bool {
        self.pair.set_master_mode(mode)
    }
    fn step(&self) -> bool {
        self.pair.step_master()
    }
}

#[cfg(test)]
mod tests {
    use fwipc_transport_api::{BulkDir, BulkRequest, Transport};

    use super::*;

    /// A bulk transmit through the transport, the VideoCore stepped on this thread until done.
    fn bulk_echo(fx: &VchiqFixture, len: usize) {
        let t = fx.transport();
        let req = BulkRequest {
            target: ECHO_FOURCC,
            dir: BulkDir::Transmit,
            buf: vec![0x5a; len],
            offset: 0,
            len,
        };
        let ticket = t.bulk(req).map_err(|(e, _)| e).expect("bulk");
        for _ in 0..1_000 {
            fx.step();
            if t.poll_done(&ticket).expect("poll_done") {
                let r = t.take_bulk(ticket).map_err(|(e, _)| e).expect("take_bulk");
                assert_eq!(r.actual, len);
                return;
            }
        }
        panic!("bulk of {len} bytes not done after 1,000 steps");
    }

    /// The echo service queues its side of a bulk from its callback, inside the VideoCore's
    /// `poll`; the kick that asks for the pairing round finds the poll gate held and leaves the
    /// round to that poller, asking the platform for nothing (on the simulator a `request_poll`
    /// rings the VideoCore's own bell, a futex call). A kick with nobody polling still asks.
    #[test]
    fn a_kick_while_polling_asks_the_platform_for_no_poll() {
        let fx = VchiqFixture::setup(Completion::Polled);
        assert!(fx.set_sim_mode(SimMode::Stepped));
        bulk_echo(&fx, 4096);
        let before = fx.pair().rings().0;
        for _ in 0..8 {
            bulk_echo(&fx, 4096);
        }
        assert_eq!(
            fx.pair().rings().0,
            before,
            "a bulk paired inside the VideoCore's poll rang its bell"
        );
        fx.pair().master().kick();
        assert_eq!(
            fx.pair().rings().0,
            before + 1,
            "a kick with nobody polling must ask the platform for a poll"
        );
        fx.step();
        assert!(fx.set_sim_mode(SimMode::Normal));
    }
}
