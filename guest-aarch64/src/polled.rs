//! [`Polled`]: a `fwipc_transport_api::Transport` adapter that sends every request in
//! [`Completion::Polled`] mode.
//!
//! The guest's polled session registers no interrupt handler for the device, so nothing would call
//! the backend's interrupt entry point (`ScmiVirtio::complete`). The SCMI agent builds its
//! requests in the default interrupt mode and waits with `poll_done`; in polled mode
//! `ScmiVirtio::poll_done` drains the cmdq itself. Everything else is passed through unchanged.

use core::task::Waker;

use fwipc_transport_api::{
    BulkRequest, BulkResult, Caps, Completion, Error, Notification, Request, Result, Stats, Ticket,
    Transport, TxOutcome,
};

/// Wraps a transport and marks each request [`Completion::Polled`].
#[derive(Debug)]
pub struct Polled<T>(pub T);

impl<T: Transport> Transport for Polled<T> {
    fn caps(&self) -> Caps {
        self.0.caps()
    }
    fn max_msg(&self) -> usize {
        self.0.max_msg()
    }
    fn max_msg_size(&self) -> usize {
        self.0.max_msg_size()
    }
    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        if !self.0.caps().polling {
            return Err(Error::NotSupported);
        }
        let req = Request {
            completion: Completion::Polled,
            ..*req
        };
        self.0.send(&req)
    }
    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        self.0.poll_done(ticket)
    }
    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        self.0.fetch_response(ticket, out)
    }
    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        self.0.mark_txdone(ticket, outcome)
    }
    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        self.0.register_waker(ticket, waker)
    }
    fn bulk(&self, req: BulkRequest) -> core::result::Result<Ticket, (Error, BulkRequest)> {
        self.0.bulk(req)
    }
    fn take_bulk(&self, ticket: Ticket) -> core::result::Result<BulkResult, (Error, Ticket)> {
        self.0.take_bulk(ticket)
    }
    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        self.0.fetch_notification(out)
    }
    fn shutdown(&self) -> Result<()> {
        self.0.shutdown()
    }
    fn stats(&self) -> Stats {
        self.0.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the completion mode of each request it is sent.
    struct Recorder {
        polling: bool,
        seen: Mutex<Vec<(u32, Completion)>>,
    }

    impl Transport for Recorder {
        fn caps(&self) -> Caps {
            Caps {
                max_msg: 4,
                max_msg_size: 128,
                bulk: false,
                max_bulk_size: 0,
                notifications: false,
                polling: self.polling,
            }
        }
        fn send(&self, req: &Request<'_>) -> Result<Ticket> {
            self.seen.lock().unwrap().push((req.target, req.completion));
            Ok(Ticket::new(1, 0, 0))
        }
        fn poll_done(&self, _ticket: &Ticket) -> Result<bool> {
            Ok(true)
        }
        fn fetch_response(&self, _ticket: &Ticket, _out: &mut [u8]) -> Result<usize> {
            Ok(0)
        }
        fn mark_txdone(&self, _ticket: Ticket, _outcome: TxOutcome) {}
        fn shutdown(&self) -> Result<()> {
            Ok(())
        }
        fn stats(&self) -> Stats {
            Stats::default()
        }
    }

    #[test]
    fn every_request_goes_out_polled() {
        let t = Polled(Recorder {
            polling: true,
            seen: Mutex::new(Vec::new()),
        });
        let ticket = t.send(&Request::new(0x1003, &[1, 2])).unwrap();
        t.mark_txdone(ticket, TxOutcome::Done);
        let ticket = t.send(&Request::new(0x1500, &[]).polled()).unwrap();
        t.mark_txdone(ticket, TxOutcome::Done);
        assert_eq!(
            *t.0.seen.lock().unwrap(),
            [(0x1003, Completion::Polled), (0x1500, Completion::Polled)]
        );
        assert_eq!(t.max_msg(), 4);
    }

    #[test]
    fn refused_when_the_transport_cannot_poll() {
        let t = Polled(Recorder {
            polling: false,
            seen: Mutex::new(Vec::new()),
        });
        assert_eq!(
            t.send(&Request::new(0x1000, &[])).unwrap_err(),
            Error::NotSupported
        );
        assert!(t.0.seen.lock().unwrap().is_empty());
    }
}
