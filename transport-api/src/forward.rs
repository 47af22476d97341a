//! `Transport` and `Datagram` for shared handles: `&T`, `Arc<T>` and `Box<T>` forward every
//! call to the transport they point at, so an owner-taking API (the SCMI agent's `Scmi::new`, a
//! session) accepts a transport that a fixture, another agent or an interrupt handler also holds.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::task::Waker;

use crate::datagram::{
    Bind, Datagram, DatagramStats, Endpoint, EndpointEvent, Rx, RxAction, RxHold, RxInfo, TxLoan,
};
use crate::transport::{BulkRequest, BulkResult, Caps, Notification, Request, Ticket, Transport};
use crate::{Error, Result, Stats, TxOutcome};

macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<T: Transport + ?Sized> Transport for $ty {
            fn caps(&self) -> Caps {
                (**self).caps()
            }
            fn max_msg(&self) -> usize {
                (**self).max_msg()
            }
            fn max_msg_size(&self) -> usize {
                (**self).max_msg_size()
            }
            fn send(&self, req: &Request<'_>) -> Result<Ticket> {
                (**self).send(req)
            }
            fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
                (**self).poll_done(ticket)
            }
            fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
                (**self).fetch_response(ticket, out)
            }
            fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
                (**self).mark_txdone(ticket, outcome)
            }
            fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
                (**self).register_waker(ticket, waker)
            }
            fn spinning(&self, ticket: &Ticket, on: bool) {
                (**self).spinning(ticket, on)
            }
            fn bulk(&self, req: BulkRequest) -> core::result::Result<Ticket, (Error, BulkRequest)> {
                (**self).bulk(req)
            }
            fn take_bulk(&self, ticket: Ticket) -> core::result::Result<BulkResult, (Error, Ticket)> {
                (**self).take_bulk(ticket)
            }
            fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
                (**self).fetch_notification(out)
            }
            fn shutdown(&self) -> Result<()> {
                (**self).shutdown()
            }
            fn stats(&self) -> Stats {
                (**self).stats()
            }
        }
    )*};
}

forward!(&T, Arc<T>, Box<T>);

macro_rules! forward_datagram {
    ($($ty:ty),*) => {$(
        impl<T: Datagram + ?Sized> Datagram for $ty {
            fn bind(&self, how: Bind<'_>) -> Result<Endpoint> {
                (**self).bind(how)
            }
            fn unbind(&self, ep: Endpoint) -> Result<()> {
                (**self).unbind(ep)
            }
            fn send_to(&self, ep: &Endpoint, dst: u32, payload: &[u8]) -> Result<()> {
                (**self).send_to(ep, dst, payload)
            }
            fn loan(&self, ep: &Endpoint) -> Result<TxLoan> {
                (**self).loan(ep)
            }
            fn send_loan(
                &self,
                ep: &Endpoint,
                dst: u32,
                loan: TxLoan,
            ) -> core::result::Result<(), (Error, TxLoan)> {
                (**self).send_loan(ep, dst, loan)
            }
            fn poll_rx(
                &self,
                ep: &Endpoint,
                budget: usize,
                f: &mut dyn FnMut(Rx<'_>) -> RxAction,
            ) -> Result<usize> {
                (**self).poll_rx(ep, budget, f)
            }
            fn recv(&self, ep: &Endpoint, out: &mut [u8]) -> Result<Option<RxInfo>> {
                (**self).recv(ep, out)
            }
            fn with_held(&self, hold: RxHold, f: &mut dyn FnMut(&[u8])) -> Result<()> {
                (**self).with_held(hold, f)
            }
            fn release_rx(&self, hold: RxHold) -> Result<()> {
                (**self).release_rx(hold)
            }
            fn next_event(&self) -> Option<EndpointEvent> {
                (**self).next_event()
            }
            fn datagram_stats(&self) -> DatagramStats {
                (**self).datagram_stats()
            }
        }
    )*};
}

forward_datagram!(&T, Arc<T>, Box<T>);
