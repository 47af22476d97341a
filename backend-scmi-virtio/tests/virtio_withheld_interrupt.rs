//! A device that withholds the interrupt the driver asked for: the reply sits in the used ring
//! and no `complete()` ever runs. An interrupt-mode waiter looks at `used.idx` on every
//! `poll_done` and collects the reply itself, so the call returns instead of timing out
//! (docs/reliability.md, "Loops the remote controls").

use std::time::{Duration, Instant};

use fwipc_scmi_virtio::sim::{EchoPlatform, SimDevice, SimDeviceConfig, SimHal};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::fixture::echo_reply;
use fwipc_transport_api::{call, Request, StdClock, ThreadParker, Wait};

const ECHO: u32 = (0x81 << 8) | 0x03;

/// Interrupt-mode calls (not `polled()`) on a device whose interrupt line nobody serves: the
/// device raises its interrupt (with EVENT_IDX, only where `used_event` asks for it), and it
/// never reaches the driver, which is what a device withholding it looks like from the driver.
#[test]
fn interrupt_mode_waiter_collects_a_reply_whose_interrupt_never_comes() {
    for offer_event_idx in [false, true] {
        let dev = SimDevice::start(
            SimDeviceConfig {
                offer_event_idx,
                ..SimDeviceConfig::default()
            },
            || Box::new(EchoPlatform::new()),
        );
        let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default())
            .expect("device setup");
        let clock = StdClock::new();
        let parker = ThreadParker::new();
        // A waiter that yields from its first poll on (as one idling in WFE would) asks for
        // every interrupt; spinning ones ask for none while they spin (`Transport::spinning`).
        let yielding = Wait::SpinThenYield {
            spins: 0,
            relax: &std::thread::yield_now,
        };
        for (k, w) in [Wait::Completion(&parker), Wait::Poll, yielding]
            .into_iter()
            .enumerate()
        {
            for i in 0..8u8 {
                let p = [i, k as u8, 0x5a, offer_event_idx as u8];
                let mut out = [0u8; 64];
                let start = Instant::now();
                let n = call(
                    &scmi,
                    &clock,
                    &Request::new(ECHO, &p),
                    &mut out,
                    Duration::from_secs(5),
                    w,
                )
                .unwrap_or_else(|e| {
                    panic!("event_idx {offer_event_idx}, wait {k}, call {i}: {e:?}")
                });
                let mut want = [0u8; 4];
                echo_reply(&p, &mut want);
                assert_eq!(&out[..n], &want);
                // A `Wait::Completion` waiter re-polls at least every 100 ms; far below the
                // timeout even on a loaded machine.
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "{:?}",
                    start.elapsed()
                );
            }
        }
        let (raised, _suppressed) = dev.interrupts();
        assert!(
            raised > 0,
            "the device asked to interrupt; nobody delivered it"
        );
    }
}
