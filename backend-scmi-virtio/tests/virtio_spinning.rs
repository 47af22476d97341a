//! `Transport::spinning`: while a caller spins on its reply the cmdq asks the device for no
//! interrupts (the spinning caller drains the ring itself), and when the last spinner stops the
//! cmdq asks again and takes what the device published meanwhile, completing and waking every
//! transfer as the interrupt would have.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use fwipc_scmi_virtio::sim::{ScmiFixture, SimDeviceConfig};
use fwipc_transport_api::fixture::{Fixture, SimMode};
use fwipc_transport_api::{Completion, Request, Transport, TxOutcome};

const ECHO: u32 = (0x81 << 8) | 0x03;

/// Counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Relaxed: read by the same thread after the wake.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Stepped (nothing runs but what the test steps), with and without `EVENT_IDX`: a caller
/// spins on transfer `a` while another caller's transfer `b` waits with a waker. The device
/// answers both and raises no interrupt; `b`'s waker has not run. When the spinner stops, the
/// reply of `b` is taken and its waker runs, with no interrupt; the next reply interrupts again.
#[test]
fn no_interrupt_while_a_caller_spins_and_the_last_one_out_takes_what_came() {
    for offer_event_idx in [false, true] {
        let fx = ScmiFixture::with_config(
            Completion::Interrupt,
            16,
            SimDeviceConfig {
                offer_event_idx,
                ..SimDeviceConfig::default()
            },
        );
        assert!(fx.remote().set_sim_mode(SimMode::Stepped));
        let t = fx.transport();
        let a = t.send(&Request::new(ECHO, &[1])).unwrap();
        let b = t.send(&Request::new(ECHO, &[2])).unwrap();
        let woken = Arc::new(Count::default());
        assert!(t.register_waker(&b, &Waker::from(woken.clone())));

        t.spinning(&a, true);
        let (raised, _) = fx.device().interrupts();
        while fx.remote().step() {}
        let (raised_spinning, suppressed) = fx.device().interrupts();
        assert_eq!(
            raised_spinning, raised,
            "event_idx {offer_event_idx}: an interrupt while a caller spins"
        );
        assert!(
            suppressed > 0,
            "event_idx {offer_event_idx}: nothing decided"
        );
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            0,
            "nothing has taken the replies"
        );

        // A second spinner joins and leaves: the first still spins, nothing changes.
        t.spinning(&b, true);
        t.spinning(&b, false);
        assert_eq!(woken.0.load(Ordering::Relaxed), 0, "a spinner is left");

        // The last one out takes both replies and wakes `b`'s waiter.
        t.spinning(&a, false);
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            1,
            "event_idx {offer_event_idx}: the waiter was not woken"
        );
        let mut out = [0u8; 8];
        for (tk, want) in [(a, !1u8), (b, !2u8)] {
            assert_eq!(t.poll_done(&tk), Ok(true));
            assert_eq!(t.fetch_response(&tk, &mut out), Ok(1));
            assert_eq!(out[0], want);
            t.mark_txdone(tk, TxOutcome::Done);
        }
        assert_eq!(
            fx.device().interrupts().0,
            raised,
            "the replies raised none"
        );

        // Interrupts are asked for again.
        let c = t.send(&Request::new(ECHO, &[3])).unwrap();
        while fx.remote().step() {}
        assert_eq!(
            fx.device().interrupts().0,
            raised + 1,
            "event_idx {offer_event_idx}: no interrupt after the spin"
        );
        assert_eq!(t.poll_done(&c), Ok(true));
        t.mark_txdone(c, TxOutcome::Done);
        fx.remote().set_sim_mode(SimMode::Normal);
    }
}
