//! Opening a session on a channel: a free session slot (context bank), its payload buffers,
//! and the [`CallWait`] its blocking calls use.

use alloc::vec::Vec;

use crate::channel::context::PayloadPool;
use crate::channel::Channel;
use crate::error::{FastRpcError, Result};
use crate::session::{CallWait, Session, SessionInner};

impl Channel {
    /// Open a session on the channel's main node (`fastrpc-<domain>-secure` for a secure
    /// channel, `fastrpc-<domain>` otherwise): the first free one, `Busy` when none is (nothing
    /// leaked). Allocates the session's payload buffers on its context bank.
    /// Its blocking calls wait as `wait` says ([`Session::with_wait`] makes a handle that
    /// waits otherwise).
    pub fn open_session(&self, wait: CallWait) -> Result<Session> {
        self.open(self.inner.cfg.secure, wait)
    }

    /// Open a session on the plain (non-secure) node of a secure channel: such a client may
    /// only create unsigned PDs.
    pub fn open_session_nonsecure(&self, wait: CallWait) -> Result<Session> {
        self.open(false, wait)
    }

    fn open(&self, secure_node: bool, wait: CallWait) -> Result<Session> {
        let (index, sid) = self.inner.take_session_slot().ok_or(FastRpcError::Busy)?;
        let cfg = &self.inner.cfg;
        let mut regions = Vec::with_capacity(cfg.payloads_per_session);
        for _ in 0..cfg.payloads_per_session {
            match self.inner.hal.alloc(sid, cfg.payload_size) {
                Some(r) => regions.push(r),
                None => {
                    self.inner.release_session_slot(index);
                    return Err(FastRpcError::NoMemory);
                }
            }
        }
        let s = Session::new(
            self.inner.clone(),
            index as u16,
            sid,
            PayloadPool::new(regions, self.inner.cfg.max_args),
            wait,
        );
        s.set_node(secure_node, self.inner.cfg.secure);
        Ok(s)
    }
}

#[doc(hidden)]
pub(crate) fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<SessionInner>();
}
