//! The service API and state machine (docs/protocols/vchiq.md §4): add (server) / open (client)
//! with fourcc and version negotiation, close and remove with the two-sided CLOSE handshake, and
//! their completion.

use alloc::sync::Arc;

use core::time::Duration;

use crate::engine::service::{ServiceHandle, ServiceParams};
use crate::engine::vchiq::{Inner, PendingEv, Service, ServiceHandler, Vchiq};
use crate::error::{Result, VchiqError};
use crate::wire::consts::*;
use crate::wire::layout::OpenPayload;
use zerocopy::IntoBytes;

impl Vchiq {
    pub(crate) fn service<'a>(&self, g: &'a Inner, h: ServiceHandle) -> Result<&'a Service> {
        match g.services.get(h.port()) {
            Some(Some(s)) if s.handle == h => Ok(s),
            _ => Err(VchiqError::Invalid),
        }
    }

    pub(crate) fn service_mut<'a>(
        &self,
        g: &'a mut Inner,
        h: ServiceHandle,
    ) -> Result<&'a mut Service> {
        match g.services.get_mut(h.port()) {
            Some(Some(s)) if s.handle == h => Ok(s),
            _ => Err(VchiqError::Invalid),
        }
    }

    fn new_handle(g: &mut Inner, port: usize) -> ServiceHandle {
        let seq = g.handle_seq;
        g.handle_seq = if seq >= 0xF_FFFF { 1 } else { seq + 1 };
        ServiceHandle((seq << 12) | port as u32)
    }

    fn set_quotas(&self, g: &mut Inner, port: usize, p: &ServiceParams) {
        let n = self.local_part.data_slots();
        let q = &mut g.quotas[port];
        q.slot_quota = if p.slot_quota == 0 {
            n / 2
        } else {
            p.slot_quota.min(n - 1)
        };
        q.message_quota = if p.message_quota == 0 {
            core::cmp::min(n / 2 * 256, 65535)
        } else {
            p.message_quota
        };
    }

    /// Offer a service (server, `public_fourcc` = `params.fourcc`). HIDDEN before connect,
    /// LISTENING after. A second server for the same fourcc must use the same handler (the C
    /// API's "same callback" rule); with another handler it is refused (`Invalid`).
    ///
    /// For the master role this is how a VideoCore-side service is plugged in.
    pub fn add_service<H: ServiceHandler + 'static>(
        &self,
        params: ServiceParams,
        handler: H,
    ) -> Result<ServiceHandle> {
        self.add_service_arc(params, Arc::new(handler))
    }

    /// [`Vchiq::add_service`] with a shared handler (several listeners, one handler).
    pub fn add_service_arc(
        &self,
        params: ServiceParams,
        handler: Arc<dyn ServiceHandler>,
    ) -> Result<ServiceHandle> {
        self.check_alive()?;
        if params.fourcc == 0 {
            return Err(VchiqError::Invalid);
        }
        let mut g = self.inner.lock();
        for s in g.services.iter().flatten() {
            if s.is_server && s.params.fourcc == params.fourcc && !Arc::ptr_eq(&s.handler, &handler)
            {
                return Err(VchiqError::Invalid);
            }
        }
        // Servers scan downward (docs/protocols/vchiq.md §4 "Ports and handles").
        let port = (1..g.services.len())
            .rev()
            .find(|&p| g.services[p].is_none())
            .ok_or(VchiqError::NoMemory)?;
        let state = match g.conn {
            ConnState::Disconnected => ServiceState::Hidden,
            _ => ServiceState::Listening,
        };
        let h = Self::new_handle(&mut g, port);
        self.set_quotas(&mut g, port, &params);
        g.services[port] = Some(Service::new(h, state, params, true, handler));
        Ok(h)
    }

    /// Open a client to the peer's `params.fourcc` service: sends OPEN and returns at once with
    /// the service OPENING. The handler gets [`crate::Event::Opened`] on OPENACK, or
    /// [`crate::Event::Closed`] if refused; [`Vchiq::open_status`] polls the same.
    pub fn open_service<H: ServiceHandler + 'static>(
        &self,
        params: ServiceParams,
        handler: H,
    ) -> Result<ServiceHandle> {
        self.open_service_arc(params, Arc::new(handler))
    }

    /// [`Vchiq::open_service`] with a shared handler.
    pub fn open_service_arc(
        &self,
        params: ServiceParams,
        handler: Arc<dyn ServiceHandler>,
    ) -> Result<ServiceHandle> {
        self.check_alive()?;
        if params.fourcc == 0 {
            return Err(VchiqError::Invalid);
        }
        let mut g = self.inner.lock();
        if g.conn != ConnState::Connected {
            return Err(VchiqError::NotConnected);
        }
        // Clients take the lowest free port. Port 0 is left unused: CLOSE's dst 0 means "I never
        // got your ACK" (docs/protocols/vchiq.md §2), so a real port 0 would be ambiguous.
        let port = (1..g.services.len())
            .find(|&p| g.services[p].is_none())
            .ok_or(VchiqError::NoMemory)?;
        let open = OpenPayload {
            fourcc: (params.fourcc as i32).into(),
            client_id: self.cfg.client_id.into(),
            version: params.version.into(),
            version_min: params.version_min.into(),
        };
        self.queue_locked(
            &mut g,
            MsgType::Open,
            port as u32,
            0,
            &[open.as_bytes()],
            None,
        )?;
        let h = Self::new_handle(&mut g, port);
        self.set_quotas(&mut g, port, &params);
        g.services[port] = Some(Service::new(
            h,
            ServiceState::Opening,
            params,
            false,
            handler,
        ));
        Ok(h)
    }

    /// `Ok(true)` once open, `Ok(false)` while OPENING, `Err(Refused)` if the peer refused,
    /// `Err(Closed)`/`Err(Invalid)` otherwise.
    pub fn open_status(&self, h: ServiceHandle) -> Result<bool> {
        let g = self.inner.lock();
        let s = self.service(&g, h)?;
        match s.state {
            ServiceState::Open | ServiceState::OpenSync => Ok(true),
            ServiceState::Opening => Ok(false),
            _ if s.refused => Err(VchiqError::Refused),
            _ => Err(VchiqError::Closed),
        }
    }

    /// Open and wait up to `timeout` for OPENACK, polling the instance and pausing the configured
    /// way ([`crate::Config::wait`]). `Timeout` (the service is removed) when the peer did not
    /// answer in time; `Refused` or `Closed` when it said no.
    pub fn open_service_wait(
        &self,
        params: ServiceParams,
        handler: Arc<dyn ServiceHandler>,
        timeout: Duration,
    ) -> Result<ServiceHandle> {
        let h = self.open_service_arc(params, handler)?;
        let r = self.wait_until(timeout, || match self.open_status(h) {
            Ok(true) => Some(Ok(h)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        });
        if r.is_err() {
            let _ = self.remove_service(h);
        }
        r
    }
    /// The local state of a service.
    pub fn service_state(&self, h: ServiceHandle) -> Result<ServiceState> {
        let g = self.inner.lock();
        Ok(self.service(&g, h)?.state)
    }

    /// The peer's service version (from OPEN or OPENACK).
    pub fn peer_version(&self, h: ServiceHandle) -> Result<i16> {
        let g = self.inner.lock();
        Ok(self.service(&g, h)?.peer_version)
    }

    /// The client id the peer sent in OPEN (server side; 0 when not open).
    pub fn client_id(&self, h: ServiceHandle) -> Result<i32> {
        let g = self.inner.lock();
        Ok(self.service(&g, h)?.client_id)
    }

    /// Start closing: OPEN → CLOSE sent (completes when the peer's CLOSE arrives, then
    /// [`crate::Event::Closed`]); CLOSEWAIT → LISTENING. `Retry` when no slot for the CLOSE.
    pub fn close_service(&self, h: ServiceHandle) -> Result {
        let mut g = self.inner.lock();
        self.close_locked(&mut g, h)
    }

    fn close_locked(&self, g: &mut Inner, h: ServiceHandle) -> Result {
        let s = self.service(g, h)?;
        let (port, remote, state) = (h.port(), s.remoteport, s.state);
        match state {
            ServiceState::Open | ServiceState::OpenSync => {
                // Master: abort our bulks first so the DONE(−1)s precede the CLOSE
                // (docs/protocols/vchiq.md §4).
                let dones = if self.role == crate::config::Role::Master {
                    self.remote_bulk_count(g, port)
                } else {
                    0
                };
                if !self.can_queue(g, dones * 16 + 8) {
                    Self::mark_tx_blocked(g, h);
                    return Err(VchiqError::Retry);
                }
                if self.role == crate::config::Role::Master {
                    self.master_abort_bulks(g, port);
                }
                self.queue_locked(g, MsgType::Close, port as u32, remote, &[], None)?;
                if let Some(Some(s)) = g.services.get_mut(port) {
                    s.state = ServiceState::CloseSent;
                }
                Ok(())
            }
            ServiceState::Opening => {
                self.queue_locked(g, MsgType::Close, port as u32, 0, &[], None)?;
                if let Some(Some(s)) = g.services.get_mut(port) {
                    s.state = ServiceState::CloseSent;
                }
                Ok(())
            }
            ServiceState::CloseWait => {
                if let Some(Some(s)) = g.services.get_mut(port) {
                    s.state = ServiceState::Listening;
                    s.client_id = 0;
                    s.remoteport = VCHIQ_PORT_FREE;
                }
                Ok(())
            }
            ServiceState::CloseSent | ServiceState::CloseRecvd => Ok(()),
            _ => Ok(()),
        }
    }

    /// Remove a service: close it if open (it ends FREE rather than LISTENING), then free the
    /// port. Open services are freed when the close completes (after [`crate::Event::Closed`]).
    pub fn remove_service(&self, h: ServiceHandle) -> Result {
        let mut g = self.inner.lock();
        let s = self.service_mut(&mut g, h)?;
        s.remove_pending = true;
        // remove_service on a server forces it to look like a client (docs/protocols/vchiq.md §4).
        s.is_server = false;
        match s.state {
            ServiceState::Open | ServiceState::OpenSync | ServiceState::Opening => {
                self.close_locked(&mut g, h)
            }
            ServiceState::CloseSent | ServiceState::CloseRecvd => Ok(()),
            _ => {
                self.abort_local_bulks(&mut g, h.port());
                if let Some(s) = g.services[h.port()].take() {
                    g.forget_handler(&s.handler);
                }
                Ok(())
            }
        }
    }

    /// Finish a close: abort leftover bulks, move to LISTENING / CLOSEWAIT / CLOSED, deliver
    /// CLOSED, free the port if removal was requested.
    pub(crate) fn close_complete(&self, g: &mut Inner, port: usize) {
        self.abort_local_bulks(g, port);
        let Some(Some(s)) = g.services.get_mut(port) else {
            return;
        };
        if s.is_server {
            if s.params.auto_close {
                s.state = ServiceState::Listening;
                s.client_id = 0;
                s.remoteport = VCHIQ_PORT_FREE;
            } else {
                s.state = ServiceState::CloseWait;
            }
        } else {
            s.state = ServiceState::Closed;
        }
        s.sync = false;
        let remove = s.remove_pending;
        let s = g.services[port].take();
        if let Some(s) = s {
            Self::push_event(g, &s, PendingEv::Closed);
            if remove {
                g.forget_handler(&s.handler);
            } else {
                g.services[port] = Some(s);
            }
        }
    }

    /// Every open handle, for teardown.
    pub(crate) fn all_handles(&self) -> alloc::vec::Vec<ServiceHandle> {
        self.inner
            .lock()
            .services
            .iter()
            .flatten()
            .map(|s| s.handle)
            .collect()
    }
}
