//! The datagram extension: endpoints, one-way sends, zero-copy sends and held receive buffers,
//! for protocols that are not request→reply (rpmsg endpoints, VCHIQ service messages). It sits
//! beside [`Transport`]: a backend that has datagrams implements both, says so in
//! [`crate::Caps`] (`one_way`, `zero_copy`, `rx_hold`, `endpoints`, `name_service`), and its
//! request/reply side is untouched. docs/datagram.md describes the model and the buffer
//! lifecycle.
//!
//! The shape follows Zephyr's `ipc_service` (endpoint register with bound/received callbacks,
//! `send`, `get_tx_buffer`/`send_nocopy`, `hold_rx_buffer`/`release_rx_buffer`) with two
//! changes for `no_std` without allocation: the receive callback is passed to
//! [`Datagram::poll_rx`] (the poll path) instead of being stored at bind time, and "bound" is an
//! [`EndpointEvent`] read with [`Datagram::next_event`].

mod counters;
mod endpoints;
mod hold;
mod loan;
#[cfg(feature = "fixtures")]
mod peer;
mod types;

pub use counters::DatagramCounters;
pub use endpoints::EndpointQueues;
pub use hold::{HoldTable, RxHold};
pub use loan::{SharedTxBufs, TxLoan};
#[cfg(feature = "fixtures")]
pub use peer::DatagramPeer;
pub use types::{Bind, DatagramStats, Endpoint, EndpointEvent, EndpointName, Rx, RxAction, RxInfo};

use crate::{Error, Result, Transport};

/// Datagram operations of a transport. All methods take `&self` and never block; like
/// [`Transport`], nothing here allocates after setup.
///
/// Everything but [`Datagram::bind`], [`Datagram::unbind`], [`Datagram::send_to`],
/// [`Datagram::poll_rx`] and [`Datagram::datagram_stats`] has a default that reports
/// [`Error::NotSupported`]: a backend implements what its [`crate::Caps`] claims.
pub trait Datagram: Transport {
    /// Bind a local endpoint. `InvalidArgument` for an address in use or outside the
    /// protocol's range, `Busy` when the endpoint table is full, `NotSupported` for
    /// [`Bind::Name`] without [`crate::Caps::endpoints`]. A protocol with a name service announces
    /// a named endpoint to the remote.
    fn bind(&self, how: Bind<'_>) -> Result<Endpoint>;

    /// Unbind (announcing the destruction where the protocol has a name service). Messages
    /// still queued for the endpoint are dropped; buffers already held stay valid until released.
    fn unbind(&self, ep: Endpoint) -> Result<()>;

    /// One-way send of a copy of `payload` from `ep` to the remote address `dst`. No reply and
    /// no ticket: `Ok` means the message was queued for the remote. `Busy`/`Retry` when no
    /// buffer or remote quota is free (nothing was queued), `TooLarge` beyond
    /// [`crate::Caps::max_msg_size`].
    fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()>;

    /// Loan a transmit buffer to write in place ([`crate::Caps::zero_copy`]). `Busy` when none is
    /// free; dropping the loan unsent gives the buffer back.
    fn loan(&self, ep: &Endpoint) -> Result<TxLoan> {
        let _ = ep;
        Err(Error::NotSupported)
    }

    /// Send a loaned buffer (its [`TxLoan::len`] bytes) from `ep` to `dst`. The loan is consumed,
    /// so the buffer cannot be touched after sending; on error it is handed back unsent.
    ///
    /// ```compile_fail,E0382
    /// use fwipc_transport_api::{Datagram, Endpoint, Result};
    /// fn send_then_touch(d: &dyn Datagram, ep: &Endpoint) -> Result<()> {
    ///     let mut loan = d.loan(ep)?;
    ///     loan.with_mut(|b| b[0] = 1)?;
    ///     loan.set_len(1)?;
    ///     let _ = d.send_loan(ep, 1, loan);
    ///     loan.with_mut(|b| b[0] = 2)?; // error[E0382]: borrow of moved value: `loan`
    ///     Ok(())
    /// }
    /// ```
    ///
    /// The same code without the touch after the send compiles:
    ///
    /// ```
    /// use fwipc_transport_api::{Datagram, Endpoint, Result};
    /// fn send(d: &dyn Datagram, ep: &Endpoint) -> Result<()> {
    ///     let mut loan = d.loan(ep)?;
    ///     loan.with_mut(|b| b[0] = 1)?;
    ///     loan.set_len(1)?;
    ///     let _ = d.send_loan(ep, 1, loan);
    ///     Ok(())
    /// }
    /// ```
    fn send_loan(
        &self,
        ep: &Endpoint,
        dst: u32,
        loan: TxLoan,
    ) -> core::result::Result<(), (Error, TxLoan)> {
        let _ = (ep, dst);
        Err((Error::NotSupported, loan))
    }

    /// The poll path: process what the remote sent and call `f` for each datagram queued for
    /// `ep`, oldest first, at most `budget` times. `f` returns [`RxAction::Hold`] to keep the
    /// buffer past the call (then [`Rx::hold`] is valid until [`Datagram::release_rx`]) or
    /// [`RxAction::Release`] to give it back at once. Returns how many datagrams were delivered.
    /// `f` must not call `poll_rx` itself.
    fn poll_rx(
        &self,
        ep: &Endpoint,
        budget: usize,
        f: &mut dyn FnMut(Rx<'_>) -> RxAction,
    ) -> Result<usize>;

    /// The pull queue: copy the oldest datagram for `ep` into `out` and release it. `out` must
    /// hold the largest datagram ([`crate::Caps::max_msg_size`]; `TooLarge` otherwise, nothing
    /// taken). `None` when nothing is queued.
    fn recv(&self, ep: &Endpoint, out: &mut [u8]) -> Result<Option<RxInfo>> {
        if out.len() < self.caps().max_msg_size {
            return Err(Error::TooLarge);
        }
        let mut got = None;
        self.poll_rx(ep, 1, &mut |rx| {
            let n = rx.data.len();
            out[..n].copy_from_slice(rx.data);
            got = Some(RxInfo {
                src: rx.src,
                len: n,
            });
            RxAction::Release
        })?;
        Ok(got)
    }

    /// Run `f` on the bytes of a held datagram. `InvalidArgument` for a handle that is not held
    /// (released already, or never held).
    fn with_held(&self, hold: RxHold, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let _ = (hold, f);
        Err(Error::NotSupported)
    }

    /// Give a held datagram's buffer back (the remote may reuse it). A second release of the same
    /// handle is refused with `InvalidArgument` and counted in
    /// [`DatagramStats::double_releases`]; it never frees a buffer twice.
    fn release_rx(&self, hold: RxHold) -> Result<()> {
        let _ = hold;
        Err(Error::NotSupported)
    }

    /// The next name-service event (a remote endpoint announced or destroyed), if any
    /// ([`crate::Caps::name_service`]).
    fn next_event(&self) -> Option<EndpointEvent> {
        None
    }

    /// Datagram counters.
    fn datagram_stats(&self) -> DatagramStats;
}
