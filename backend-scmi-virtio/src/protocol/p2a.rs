//! Platform-to-agent traffic: the table of delayed responses being waited for (matched on token +
//! protocol id + message id + type, docs/protocols/scmi.md §8 item 4) and the fixed-capacity
//! subscriber table that notifications are dispatched to.
//!
//! Both tables are sized when the agent is built; the per-message paths only copy into
//! preallocated buffers.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::header::Header;

/// One unsolicited message as handed to subscribers: the decoded header and the payload after
/// it (for notifications, the notification body; see [`crate::protocol::notify`] for typed
/// parsers).
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Decoded header (type [`crate::header::MsgType::Notification`]; its token is meaningless).
    pub header: Header,
    /// Bytes after the header.
    pub payload: &'a [u8],
}

/// A notification callback. Runs on whichever thread pumps P2A messages; keep it short and
/// non-blocking, and do not issue asynchronous commands or pump from inside it.
pub type Callback = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Which notifications a subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// Protocol id; `None` = any.
    pub protocol: Option<u8>,
    /// Notification message id; `None` = any.
    pub message: Option<u8>,
}

impl Filter {
    /// Every notification.
    pub const ALL: Filter = Filter {
        protocol: None,
        message: None,
    };

    /// One notification of one protocol.
    pub const fn exact(protocol: u8, message: u8) -> Filter {
        Filter {
            protocol: Some(protocol),
            message: Some(message),
        }
    }

    /// Every notification of a protocol.
    pub const fn protocol(protocol: u8) -> Filter {
        Filter {
            protocol: Some(protocol),
            message: None,
        }
    }

    /// Whether `h` passes.
    pub fn matches(&self, h: &Header) -> bool {
        self.protocol.is_none_or(|p| p == h.protocol_id)
            && self.message.is_none_or(|m| m == h.message_id)
    }
}

/// Handle returned by `subscribe`, for `unsubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub(crate) usize);

/// Fixed-capacity subscriber table.
pub(crate) struct Subscribers {
    slots: Vec<Option<(Filter, Callback)>>,
}

impl Subscribers {
    pub(crate) fn new(capacity: usize) -> Self {
        Subscribers {
            slots: (0..capacity).map(|_| None).collect(),
        }
    }

    pub(crate) fn add(&mut self, f: Filter, cb: Callback) -> Option<SubscriptionId> {
        let i = self.slots.iter().position(Option::is_none)?;
        *self.slots.get_mut(i)? = Some((f, cb));
        Some(SubscriptionId(i))
    }

    pub(crate) fn remove(&mut self, id: SubscriptionId) -> bool {
        match self.slots.get_mut(id.0) {
            Some(s @ Some(_)) => {
                *s = None;
                true
            }
            _ => false,
        }
    }

    /// Call every matching subscriber; returns how many were called.
    pub(crate) fn dispatch(&self, ev: &Event<'_>) -> usize {
        let mut n = 0;
        for (f, cb) in self.slots.iter().flatten() {
            if f.matches(&ev.header) {
                cb(ev);
                n += 1;
            }
        }
        n
    }
}

/// State of one delayed-response slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    Free,
    /// Claimed; the command is being sent (token not known yet).
    Reserved,
    /// Waiting for a delayed response with this identity.
    Waiting {
        protocol: u8,
        message: u8,
        token: u16,
    },
    /// The delayed response arrived: `len` payload bytes (status first) are in the buffer.
    Arrived {
        len: usize,
    },
    /// The delayed response arrived but was larger than the slot buffer.
    Overflow,
}

pub(crate) struct DelayedSlot {
    pub(crate) state: SlotState,
    pub(crate) buf: Box<[u8]>,
}

/// Preallocated table of awaited delayed responses, and the buffer P2A messages are fetched
/// into.
pub(crate) struct DelayedTable {
    pub(crate) slots: Vec<DelayedSlot>,
    pub(crate) pump_buf: Box<[u8]>,
}

impl DelayedTable {
    pub(crate) fn new(capacity: usize, buf_size: usize, pump_size: usize) -> Self {
        DelayedTable {
            pump_buf: vec![0u8; pump_size].into_boxed_slice(),
            slots: (0..capacity)
                .map(|_| DelayedSlot {
                    state: SlotState::Free,
                    buf: vec![0u8; buf_size].into_boxed_slice(),
                })
                .collect(),
        }
    }

    /// Claim a free slot.
    pub(crate) fn reserve(&mut self) -> Option<usize> {
        let i = self.slots.iter().position(|s| s.state == SlotState::Free)?;
        self.slots.get_mut(i)?.state = SlotState::Reserved;
        Some(i)
    }

    pub(crate) fn set(&mut self, i: usize, st: SlotState) {
        if let Some(s) = self.slots.get_mut(i) {
            s.state = st;
        }
    }

    pub(crate) fn state(&self, i: usize) -> SlotState {
        self.slots.get(i).map_or(SlotState::Free, |s| s.state)
    }

    /// Deliver the delayed response in `pump_buf[..len]`. Returns `false` if nothing waits for
    /// it (late, duplicate or unsolicited: the caller counts and drops it).
    pub(crate) fn slots_deliver(&mut self, h: &Header, len: usize) -> bool {
        let DelayedTable { slots, pump_buf } = self;
        let payload = pump_buf.get(..len).unwrap_or(&[]);
        deliver(slots, h, payload)
    }

    /// Deliver `payload` as a delayed response.
    #[cfg(test)]
    pub(crate) fn deliver(&mut self, h: &Header, payload: &[u8]) -> bool {
        deliver(&mut self.slots, h, payload)
    }
}

/// Match on token + protocol id + message id (the type was checked by the caller). A body longer
/// than the slot buffer marks the slot `Overflow` instead of being truncated.
fn deliver(slots: &mut [DelayedSlot], h: &Header, payload: &[u8]) -> bool {
    let want = SlotState::Waiting {
        protocol: h.protocol_id,
        message: h.message_id,
        token: h.token,
    };
    let Some(s) = slots.iter_mut().find(|s| s.state == want) else {
        return false;
    };
    match s.buf.get_mut(..payload.len()) {
        Some(dst) => {
            dst.copy_from_slice(payload);
            s.state = SlotState::Arrived { len: payload.len() };
        }
        None => s.state = SlotState::Overflow,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::MsgType;

    #[test]
    fn delayed_table_matches_full_identity() {
        let mut t = DelayedTable::new(2, 8, 16);
        let i = t.reserve().unwrap();
        t.set(
            i,
            SlotState::Waiting {
                protocol: 0x15,
                message: 6,
                token: 9,
            },
        );
        let mut h = Header {
            message_id: 6,
            msg_type: MsgType::DelayedResponse,
            protocol_id: 0x15,
            token: 10,
        };
        assert!(!t.deliver(&h, &[0; 4]), "wrong token");
        h.token = 9;
        h.message_id = 7;
        assert!(!t.deliver(&h, &[0; 4]), "wrong message");
        h.message_id = 6;
        h.protocol_id = 0x14;
        assert!(!t.deliver(&h, &[0; 4]), "wrong protocol");
        h.protocol_id = 0x15;
        assert!(t.deliver(&h, &[1; 12]));
        assert_eq!(t.state(i), SlotState::Overflow, "too long: not truncated");
        t.set(
            i,
            SlotState::Waiting {
                protocol: 0x15,
                message: 6,
                token: 9,
            },
        );
        assert!(t.deliver(&h, &[1; 8]));
        assert_eq!(t.state(i), SlotState::Arrived { len: 8 });
        assert!(!t.deliver(&h, &[0; 4]), "duplicate");
        assert!(t.reserve().is_some());
        assert!(t.reserve().is_none());
    }
}
