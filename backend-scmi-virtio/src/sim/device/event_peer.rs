//! The simulated platform as the remote of the datagram side ([`DatagramPeer`]): it emits
//! notifications straight into the eventq buffers the driver posted, so a driver that keeps them
//! (every datagram receive buffer held) makes the next emission fail with `Busy`, the
//! back-pressure the conformance scenario `rx_hold_exhaustion` looks for.

use fwipc_transport_api::fixture::DatagramPeer;
use fwipc_transport_api::{Error, Result};

use super::{lock, SimDevice};
use crate::header::{Header, MsgType, HEADER_LEN};
use crate::platform::P2A_MSG_MAX;

/// The message id of the notifications [`DatagramPeer::send`] emits.
pub const PEER_NOTIFY_MESSAGE: u8 = 0;

impl SimDevice {
    /// Emit a notification (SCMI §4.1.1: type 3, token 0) of `protocol` with `message` id and
    /// `payload` into the next eventq buffer the driver posted, ahead of whatever the platform
    /// model still queues. `Busy` if the device holds no eventq buffer (or has not been started),
    /// `TooLarge` if the message does not fit the buffer (nothing is written).
    pub fn emit_notification(&self, protocol: u8, message: u8, payload: &[u8]) -> Result<()> {
        let hdr = Header {
            message_id: message,
            msg_type: MsgType::Notification,
            protocol_id: protocol,
            token: 0,
        };
        let len = HEADER_LEN + payload.len();
        if len > P2A_MSG_MAX {
            return Err(Error::TooLarge);
        }
        let mut msg = [0u8; P2A_MSG_MAX];
        msg[..HEADER_LEN].copy_from_slice(&hdr.to_le_bytes());
        msg[HEADER_LEN..len].copy_from_slice(payload);
        let mut d = lock(&self.sh.dev);
        if !d.driver_ok() || d.stopped {
            return Err(Error::Busy);
        }
        // Buffers posted since the device thread last looked count too.
        d.process_eventq(&self.sh.isr);
        match d.event_bufs.front() {
            None => return Err(Error::Busy),
            Some(&(_, _, cap)) if len > cap as usize => return Err(Error::TooLarge),
            Some(_) => {}
        }
        let ok = d.fill_event(&msg[..len], len as u32, &self.sh.isr);
        drop(d);
        self.sh.signal_irq();
        if ok {
            Ok(())
        } else {
            Err(Error::Busy)
        }
    }
}

/// The remote is the platform: it sends notifications of protocol `dst` and receives nothing
/// (the agent has no one-way send).
impl DatagramPeer for SimDevice {
    /// The platform has no address; 0.
    fn addr(&self) -> u32 {
        0
    }

    /// A notification of protocol `dst` (`InvalidArgument` beyond 8 bits) with message id
    /// [`PEER_NOTIFY_MESSAGE`] (see [`SimDevice::emit_notification`]).
    fn send(&self, dst: u32, payload: &[u8]) -> Result<()> {
        let protocol = u8::try_from(dst).map_err(|_| Error::InvalidArgument)?;
        self.emit_notification(protocol, PEER_NOTIFY_MESSAGE, payload)
    }

    fn take_received(&self) -> Vec<(u32, Vec<u8>)> {
        Vec::new()
    }
}
