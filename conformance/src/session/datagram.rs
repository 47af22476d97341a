//! The datagram side of a hostile session ([`Fixture::datagram`]): the script binds and unbinds
//! endpoints, sends one-way by copy and by loan, has the remote send to our endpoints, receives
//! through the poll path (holding some buffers), and releases held buffers, twice on purpose.
//! These operations read no script bytes of their own (payloads are derived from a counter), so
//! adding them left every existing seed's request/reply part as it was.
//!
//! What must hold, whatever the remote does (docs/datagram.md, docs/reliability.md):
//! - a delivered datagram fits [`Caps::max_msg_size`](fwipc_transport_api::Caps); while the
//!   remote has been told nothing hostile (no fault, no garbage, no reset) it is byte for byte one
//!   the remote was asked to send (through the datagram peer, or as an unsolicited message);
//! - what the remote received from us is one of the payloads we sent;
//! - a held buffer stays held until released, whatever the remote does, and is released once: a
//!   second release of the same handle is refused with `InvalidArgument`, never a second free;
//! - after shutdown (which may take held buffers back), once every held buffer is released,
//!   none is held.

use fwipc_transport_api::fixture::{DatagramPeer, Fixture};
use fwipc_transport_api::{Bind, Caps, Datagram, Endpoint, Error, RxAction, RxHold};

/// Endpoints bound at once, at most.
const MAX_EPS: usize = 4;
/// Datagrams one receive operation takes, at most.
const RX_BUDGET: usize = 8;

/// The datagram state of one session.
pub(super) struct DgramSession<'a> {
    d: &'a dyn Datagram,
    peer: &'a dyn DatagramPeer,
    caps: Caps,
    eps: Vec<Endpoint>,
    holds: Vec<RxHold>,
    /// Payloads the remote was asked to send to us.
    to_us: Vec<Vec<u8>>,
    /// Payloads we sent to the remote.
    from_us: Vec<Vec<u8>>,
    /// Numbers the next payload.
    next: u32,
    /// The remote was told something hostile: what it delivers is no longer checked byte for
    /// byte.
    tainted: bool,
    /// Datagrams delivered to us.
    pub(super) delivered: u32,
}

impl<'a> DgramSession<'a> {
    /// The datagram side of `fx`, if it has one.
    pub(super) fn new<F: Fixture>(fx: &'a F, caps: Caps) -> Option<Self> {
        let (d, peer) = fx.datagram()?;
        Some(DgramSession {
            d,
            peer,
            caps,
            eps: Vec::new(),
            holds: Vec::new(),
            to_us: Vec::new(),
            from_us: Vec::new(),
            next: 0,
            tainted: false,
            delivered: 0,
        })
    }

    /// The remote sends `payload` unsolicited (a notification): it may arrive at one of our
    /// endpoints.
    pub(super) fn expect(&mut self, payload: &[u8]) {
        self.to_us.push(payload.to_vec());
    }

    /// The remote was given a fault, garbage or a reset.
    pub(super) fn taint(&mut self) {
        self.tainted = true;
    }

    /// A fresh payload of `4 + 4 * n` bytes (at most the transport's maximum): its number, then
    /// bytes derived from it.
    fn payload(&mut self, n: u8) -> Vec<u8> {
        let tag = self.next;
        self.next += 1;
        let len = (4 + 4 * usize::from(n)).min(self.caps.max_msg_size);
        let mut p: Vec<u8> = tag.to_le_bytes().into_iter().cycle().take(len).collect();
        for (i, b) in p.iter_mut().enumerate().skip(4) {
            *b ^= i as u8;
        }
        p
    }

    /// One operation: `arg` picks it (low three bits) and its parameter (the rest).
    pub(super) fn op(&mut self, arg: u8) {
        let n = arg >> 3;
        match arg & 7 {
            0 => {
                if self.eps.len() < MAX_EPS {
                    if let Ok(ep) = self.d.bind(Bind::Any) {
                        self.eps.push(ep);
                    }
                }
            }
            1 => {
                if !self.eps.is_empty() {
                    let ep = self.eps.swap_remove(usize::from(n) % self.eps.len());
                    let _ = self.d.unbind(ep);
                }
            }
            2 => self.send(n, false),
            3 => self.send(n, true),
            4 => {
                if let Some(addr) = self
                    .eps
                    .get(usize::from(n) % self.eps.len().max(1))
                    .map(Endpoint::addr)
                {
                    let p = self.payload(n);
                    if self.peer.send(addr, &p).is_ok() {
                        self.to_us.push(p);
                    }
                }
            }
            5 => self.receive(n),
            6 => {
                if !self.holds.is_empty() {
                    let h = self.holds.swap_remove(usize::from(n) % self.holds.len());
                    self.release_once(h, false);
                }
            }
            _ => self.check_remote_received(),
        }
    }

    /// One-way send from one of our endpoints to the remote, by copy or by loan.
    fn send(&mut self, n: u8, by_loan: bool) {
        let Some(i) = (!self.eps.is_empty()).then(|| usize::from(n) % self.eps.len()) else {
            return;
        };
        let p = self.payload(n);
        let dst = self.peer.addr();
        let ep = &self.eps[i];
        let sent = if by_loan {
            let Ok(mut loan) = self.d.loan(ep) else {
                return;
            };
            if loan.write(0, &p).is_err() || loan.set_len(p.len()).is_err() {
                return;
            }
            self.d.send_loan(ep, dst, loan).is_ok()
        } else {
            self.d.send_to(ep, dst, &p).is_ok()
        };
        if sent {
            self.from_us.push(p);
        }
    }

    /// The poll path on one endpoint: every datagram is checked; one in two is held.
    fn receive(&mut self, n: u8) {
        let Some(ep) = self.eps.get(usize::from(n) % self.eps.len().max(1)) else {
            return;
        };
        let (max, tainted, to_us) = (self.caps.max_msg_size, self.tainted, &self.to_us);
        let mut holds = Vec::new();
        let mut delivered = 0;
        let mut k = usize::from(n);
        let _ = self.d.poll_rx(ep, RX_BUDGET, &mut |rx| {
            delivered += 1;
            assert!(rx.data.len() <= max, "a datagram longer than max_msg_size");
            assert!(
                tainted || to_us.iter().any(|p| p.as_slice() == rx.data),
                "a datagram the remote was never asked to send: {:?}",
                rx.data
            );
            k += 1;
            if k % 2 == 0 {
                holds.push(rx.hold);
                RxAction::Hold
            } else {
                RxAction::Release
            }
        });
        self.delivered += delivered;
        self.holds.extend(holds);
    }

    /// Release `h`, then release it again: the second must be refused. The first must succeed
    /// while the transport is up; after shutdown the buffer may have been taken back already.
    fn release_once(&self, h: RxHold, shut_down: bool) {
        let first = self.d.release_rx(h);
        assert!(
            first.is_ok() || (shut_down && first == Err(Error::InvalidArgument)),
            "release of a held buffer: {first:?}"
        );
        assert_eq!(
            self.d.release_rx(h),
            Err(Error::InvalidArgument),
            "a second release of the same handle"
        );
    }

    /// Whatever the remote received from us is something we sent.
    fn check_remote_received(&self) {
        for (_, p) in self.peer.take_received() {
            assert!(
                self.from_us.contains(&p),
                "the remote received a datagram we never sent: {p:?}"
            );
        }
    }

    /// After shutdown: every held buffer is released (once), after which none is held.
    pub(super) fn finish(mut self) {
        self.check_remote_received();
        for h in core::mem::take(&mut self.holds) {
            self.release_once(h, true);
        }
        assert_eq!(
            self.d.datagram_stats().held,
            0,
            "receive buffers still held after every hold was released"
        );
    }
}
