//! `Transport` for shared handles: `&T`, `Arc<T>` and `Box<T>` forward every call to the
//! transport they point at, so an owner-taking API (the SCMI agent's `Scmi::new`, a session)
//! accepts a transport that a fixture, another agent or an interrupt handler also holds.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::task::Waker;

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
