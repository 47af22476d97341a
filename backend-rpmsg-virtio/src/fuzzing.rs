//! Entry points for the fuzz targets (`fuzz/`): one per parser of remote input. Each must return
//! normally for any input.

use crate::addr::BUF_SIZE;
use crate::node::Node;
use crate::role::Role;

/// `parse_frame` on arbitrary bytes, and the payload view of what it accepts.
pub fn frame(data: &[u8]) {
    if let Ok(f) = crate::frame::parse_frame(data) {
        assert!(crate::addr::HDR_SIZE + f.len <= data.len());
        let _ = f.payload(data);
    }
}

/// `parse_ns` on arbitrary bytes; an accepted announcement re-encodes to the same fields.
pub fn ns_msg(data: &[u8]) {
    if let Ok(a) = crate::frame::parse_ns(data) {
        let m = crate::frame::ns_payload(&a);
        assert_eq!(
            crate::frame::parse_ns(zerocopy::IntoBytes::as_bytes(&m)),
            Ok(a)
        );
    }
}

/// A node of either role fed a sequence of frames (split on the first byte of each chunk as its
/// length): the endpoint and service tables stay within capacity, nothing panics.
pub fn node_session(data: &[u8]) {
    let role = if data.first().is_some_and(|b| b & 1 == 1) {
        Role::Device
    } else {
        Role::Driver
    };
    let mut node = Node::new(role, 4, 4, true);
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut budget = 256;
    while let Some((&n, tail)) = rest.split_first() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let n = (n as usize * 4).min(tail.len()).min(BUF_SIZE + 8);
        let (frame, tail) = tail.split_at(n);
        let _ = node.receive(frame);
        rest = tail;
    }
}

/// A link that discards what is sent and hands over the frames queued in it.
struct ReplayLink {
    frames: spin::Mutex<alloc::collections::VecDeque<alloc::vec::Vec<u8>>>,
}

impl crate::link::Link for ReplayLink {
    fn send(&self, _frame: &[u8]) -> Result<(), crate::link::LinkError> {
        Ok(())
    }

    fn receive(&self, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(f) = self.frames.lock().pop_front() else {
                break;
            };
            sink(&f);
            n += 1;
        }
        n
    }

    fn reset(&self) {
        self.frames.lock().clear();
    }
}

/// The driver's whole receive path (`RpmsgTransport`: name service, reply matching by address
/// and source, notifications) fed hostile frames between sends, timeouts and fetches. Each
/// chunk starts with an op byte: 0 send a call, 1 give up on the oldest call, 2 poll and finish
/// every call, otherwise the next `4 * byte` bytes arrive as a frame (odd ops aim it at a transfer
/// address, ops with bit 1 set also make it a well-formed reply from the call's target).
/// The pool must be whole again after shutdown. A datagram endpoint is bound at [`DGRAM_ADDR`]
/// (ops with bit 2 and not bit 0 aim the frame there); op 2 also drains it, holding every other
/// datagram and releasing (twice) what the previous op 2 held.
pub fn transport_rx(data: &[u8]) {
    use fwipc_transport_api::{
        Bind, Datagram, ManualClock, Request, RxAction, Transport, TxOutcome,
    };

    let link = ReplayLink {
        frames: spin::Mutex::new(alloc::collections::VecDeque::new()),
    };
    let cfg = crate::transport::RpmsgConfig {
        max_msg: 4,
        ..Default::default()
    };
    let Ok(t) = crate::transport::RpmsgTransport::new(link, ManualClock::new(), cfg) else {
        return;
    };
    let Ok(ep) = t.bind(Bind::Addr(DGRAM_ADDR)) else {
        return;
    };
    let mut held = alloc::vec::Vec::new();
    let mut tickets = alloc::collections::VecDeque::new();
    let mut rest = data;
    let mut out = [0u8; crate::addr::MAX_PAYLOAD];
    let mut budget = 512;
    while let Some((&op, tail)) = rest.split_first() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        rest = tail;
        match op {
            0 => {
                if let Ok(x) = t.send(&Request::new(1024, &[1, 2, 3, 4]).polled()) {
                    tickets.push_back(x);
                }
            }
            1 => {
                if let Some(x) = tickets.pop_front() {
                    t.mark_txdone(x, TxOutcome::TimedOut);
                }
            }
            2 => {
                while let Some(x) = tickets.pop_front() {
                    if t.poll_done(&x) == Ok(true) {
                        let _ = t.fetch_response(&x, &mut out);
                        t.mark_txdone(x, TxOutcome::Done);
                    } else {
                        t.mark_txdone(x, TxOutcome::TimedOut);
                    }
                }
                while let Ok(Some(_)) = t.fetch_notification(&mut out) {}
                for h in held.drain(..) {
                    let _ = t.release_rx(h);
                    assert!(t.release_rx(h).is_err(), "a double release was accepted");
                }
                let mut keep = false;
                let _ = t.poll_rx(&ep, usize::MAX, &mut |rx| {
                    keep = !keep;
                    if keep {
                        held.push(rx.hold);
                        RxAction::Hold
                    } else {
                        RxAction::Release
                    }
                });
            }
            _ => {
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                let n = (n as usize * 4).min(tail.len());
                let (frame, tail) = tail.split_at(n);
                rest = tail;
                // Replies go to the transfer addresses: steer some frames there.
                let mut f = alloc::vec::Vec::from(frame);
                if op & 5 == 4 && f.len() >= 8 {
                    f[4..8].copy_from_slice(&DGRAM_ADDR.to_le_bytes());
                }
                if op & 1 == 1 && f.len() >= 8 {
                    let tok = u32::from(f[4]) & 0xf;
                    f[4..8].copy_from_slice(&(crate::addr::TRANSFER_ADDR_BASE + tok).to_le_bytes());
                }
                // ... and make some of those well-formed replies from the target.
                if op & 2 == 2 && f.len() >= crate::addr::HDR_SIZE {
                    let len = (f.len() - crate::addr::HDR_SIZE) as u16;
                    f[..4].copy_from_slice(&1024u32.to_le_bytes());
                    f[12..14].copy_from_slice(&len.to_le_bytes());
                }
                t.link().frames.lock().push_back(f);
                t.handle_interrupt();
            }
        }
    }
    for x in tickets {
        t.mark_txdone(x, TxOutcome::TimedOut);
    }
    let _ = t.shutdown();
    let s = t.stats();
    assert_eq!(
        s.pool_free, s.pool_capacity,
        "pool not whole after shutdown"
    );
    assert_eq!(t.datagram_stats().held, 0, "datagrams held after shutdown");
}

/// The datagram endpoint [`transport_rx`] binds.
pub const DGRAM_ADDR: u32 = 0x500;

/// The ring link's handling of device-written used elements ([`VirtioLink`], driver role, over a
/// simulated device with 8-entry queues): the input is 7-byte records `[op, id (4, LE), len (2,
/// LE)]`; op bit 0 picks the queue (receive / transmit), bit 1 publishes the element as a
/// `used.idx` jump of `len` entries instead, bit 2 has the device answer one message into a
/// receive buffer, bit 3 has it then set `DEVICE_NEEDS_RESET` (with a configuration interrupt),
/// whatever state its rings are in. After each record the driver drains the receive queue
/// (within a budget) and sends one frame. Nothing panics, a drain never exceeds its budget, the
/// driver never counts more free transmit buffers than exist, a device reset the drain performs
/// is reported to the transport once and, when the device runs again, gives every transmit
/// buffer back, and a confirmed reset at the end gives every one back.
///
/// [`VirtioLink`]: crate::virtio_link::VirtioLink
#[cfg(feature = "sim")]
pub fn virtio_link_used(data: &[u8]) {
    use crate::link::Link;
    use crate::role::{VQ_DRIVER_RX, VQ_DRIVER_TX};
    use crate::sim::RingDevice;
    use crate::virtio_link::{VirtioLink, VirtioLinkConfig};
    use fwipc_transport_api::StdClock;
    use fwipc_virtio::hal::IdentityHal;
    use virtio_drivers::transport::{DeviceStatus, Transport};

    const QUEUE: u16 = 8;
    const BUDGET: usize = 4;
    let dev = RingDevice::new(data.first().is_some_and(|b| b & 0x80 != 0));
    let cfg = VirtioLinkConfig {
        queue_size: Some(QUEUE),
        ..VirtioLinkConfig::default()
    };
    let Ok(link) = VirtioLink::<IdentityHal, _, _>::new(dev.transport(), StdClock::new(), cfg)
    else {
        return;
    };
    let frame = [0u8; crate::addr::HDR_SIZE];
    for r in data.chunks_exact(7).take(256) {
        let queue = if r[0] & 1 == 0 {
            VQ_DRIVER_RX
        } else {
            VQ_DRIVER_TX
        };
        let id = u32::from_le_bytes([r[1], r[2], r[3], r[4]]);
        let len = u16::from_le_bytes([r[5], r[6]]);
        if r[0] & 2 != 0 {
            dev.jump_used_idx(queue, len);
        } else {
            dev.inject_used(queue, id, u32::from(len));
        }
        if r[0] & 4 != 0 {
            let _ = dev.send(r);
        }
        let running = || {
            !link.quarantined()
                && link.with_transport(|t| t.get_status().contains(DeviceStatus::DRIVER_OK))
        };
        let was_running = running();
        let needs_reset = r[0] & 8 != 0 && dev.signal_needs_reset();
        let resets = link.stats().device_resets;
        let n = link.receive(BUDGET, &mut |f| assert!(f.len() <= BUF_SIZE));
        assert!(n <= BUDGET);
        let reset = link.stats().device_resets != resets;
        assert!(!reset || needs_reset, "a device reset nobody asked for");
        if needs_reset && was_running {
            // Reset and running again, quarantined, or left FAILED: the transport hears of it
            // once either way.
            assert!(
                link.take_device_reset(),
                "a device reset the transport does not hear of"
            );
            assert!(!link.take_device_reset(), "one device reset reported twice");
            assert!(
                reset || !running(),
                "a device that needs a reset is used as it is"
            );
            if reset && running() {
                assert_eq!(
                    link.tx_free(),
                    usize::from(QUEUE),
                    "a reset device still holds transmit buffers"
                );
            }
        }
        let _ = link.send(&frame);
        assert!(link.tx_free() <= usize::from(QUEUE));
    }
    link.reset();
    if !link.quarantined() {
        assert_eq!(link.tx_free(), usize::from(QUEUE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn entry_points_survive_random_bytes(b in proptest::collection::vec(any::<u8>(), 0..1200)) {
            frame(&b);
            ns_msg(&b);
            node_session(&b);
            transport_rx(&b);
        }

        #[test]
        fn ring_link_survives_random_used_elements(
            b in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            virtio_link_used(&b);
        }
    }
}
