//! [`EchoPlatform`]: a tiny `PlatformModel` for bring-up: the fwipc test protocol's ECHO
//! (0x81/0x03, parameters returned with every byte inverted) and its notifications; everything
//! else answers NOT_SUPPORTED.

use std::collections::VecDeque;

use crate::header::{Header, MsgType, HEADER_LEN};
use crate::platform::{PlatformModel, FWIPC_TEST_ECHO, FWIPC_TEST_PROTOCOL};

const NOT_SUPPORTED: i32 = -1;
const COMMS_ERROR: i32 = -7;

/// Echo-only SCMI platform.
#[derive(Debug, Default)]
pub struct EchoPlatform {
    notifications: VecDeque<Vec<u8>>,
    /// Notifications dropped because the eventq buffer was too small.
    pub dropped_notifications: u64,
}

impl EchoPlatform {
    /// A platform with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }
}

fn status_only(hdr: u32, status: i32, resp: &mut [u8]) -> usize {
    if resp.len() < 8 {
        return 0;
    }
    resp[..4].copy_from_slice(&hdr.to_le_bytes());
    resp[4..8].copy_from_slice(&status.to_le_bytes());
    8
}

impl PlatformModel for EchoPlatform {
    fn handle_command(&mut self, req: &[u8], resp: &mut [u8]) -> usize {
        let Ok(h) = Header::decode_bytes(req) else {
            return 0;
        };
        let hdr = h.encode();
        if h.msg_type != MsgType::Command {
            return status_only(hdr, NOT_SUPPORTED, resp);
        }
        if h.protocol_id == FWIPC_TEST_PROTOCOL && h.message_id == FWIPC_TEST_ECHO {
            let params = &req[HEADER_LEN..];
            if resp.len() < 8 + params.len() {
                return status_only(hdr, COMMS_ERROR, resp);
            }
            resp[..4].copy_from_slice(&hdr.to_le_bytes());
            resp[4..8].copy_from_slice(&0i32.to_le_bytes());
            fwipc_transport_api::fixture::echo_reply(params, &mut resp[8..8 + params.len()]);
            return 8 + params.len();
        }
        status_only(hdr, NOT_SUPPORTED, resp)
    }

    fn next_p2a(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(n) = self.notifications.pop_front() {
            if n.len() <= buf.len() {
                buf[..n.len()].copy_from_slice(&n);
                return Some(n.len());
            }
            self.dropped_notifications += 1;
        }
        None
    }

    fn queue_notification(&mut self, protocol: u8, message: u8, payload: &[u8]) {
        let h = Header {
            message_id: message,
            msg_type: MsgType::Notification,
            protocol_id: protocol,
            token: 0,
        };
        let mut m = h.to_le_bytes().to_vec();
        m.extend_from_slice(payload);
        self.notifications.push_back(m);
    }
}
