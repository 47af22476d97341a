//! Protocol constants (docs/protocols/vchiq.md §0), message types (§2), service states, callback
//! reasons and service options (§4), connection states (§6). Values are wire- or API-visible: do
//! not renumber.

/// `'VCHI'`, the slot-zero magic.
pub const VCHIQ_MAGIC: u32 = make_fourcc(*b"VCHI");
/// Protocol version we speak (8 = SYNCHRONOUS mode safe).
pub const VCHIQ_VERSION: i16 = 8;
/// Oldest protocol version we accept.
pub const VCHIQ_VERSION_MIN: i16 = 3;
/// First version where synchronous services are safe.
pub const VCHIQ_VERSION_SYNCHRONOUS_MODE: i16 = 8;
/// Bytes per slot.
pub const VCHIQ_SLOT_SIZE: usize = 4096;
/// Mask of the offset within a slot.
pub const VCHIQ_SLOT_MASK: u32 = 0xFFF;
/// Slot descriptors reserved in slot zero.
pub const VCHIQ_MAX_SLOTS: usize = 128;
/// Slots one side can own; also the length of `slot_queue`.
pub const VCHIQ_MAX_SLOTS_PER_SIDE: usize = 64;
/// Mask for indexing `slot_queue`.
pub const VCHIQ_SLOT_QUEUE_MASK: u32 = (VCHIQ_MAX_SLOTS_PER_SIDE as u32) - 1;
/// Slots taken by slot zero.
pub const VCHIQ_SLOT_ZERO_SLOTS: usize = 1;
/// Ports 0..4095.
pub const VCHIQ_MAX_SERVICES: usize = 4096;
/// "No remote port" marker (local only, never valid on the wire; sent as `& 0xFFF` = 0).
pub const VCHIQ_PORT_FREE: u32 = 0x1000;
/// Bulk queue depth per service per direction.
pub const VCHIQ_NUM_SERVICE_BULKS: usize = 4;
/// Bulks in flight at once across the instance.
pub const VCHIQ_NUM_CURRENT_BULKS: usize = 32;
/// Fragment buffers (head/tail cache-line pairs) in the pool.
pub const VCHIQ_MAX_FRAGMENTS: usize = 2 * VCHIQ_NUM_CURRENT_BULKS;
/// Message header size (a power of two).
pub const VCHIQ_HEADER_SIZE: usize = 8;
/// Largest message payload (a message fills one whole slot).
pub const VCHIQ_MAX_MSG_SIZE: usize = VCHIQ_SLOT_SIZE - VCHIQ_HEADER_SIZE;
/// Receiver-side marker ORed into a delivered DATA message's msgid in the sender's slot.
pub const VCHIQ_MSGID_CLAIMED: u32 = 0x4000_0000;
/// `actual` of an aborted bulk in BULK_x_DONE.
pub const VCHIQ_BULK_ACTUAL_ABORTED: i32 = -1;
/// Entries of `shared_state.debug[]` (VCHIQ_ENABLE_DEBUG = 1 makes this layout-significant).
pub const DEBUG_MAX: usize = 11;
/// Platform fragment cache-line size on BCM2836/7/2711 (32 on BCM2835); must match the firmware.
pub const DEFAULT_CACHE_LINE_SIZE: usize = 64;
/// Firmware property tag that hands the slot-zero bus address to the VPU.
pub const RPI_FIRMWARE_VCHIQ_INIT: u32 = 0x0004_8010;

/// Pack a fourcc big-end-first: `(c0<<24)|(c1<<16)|(c2<<8)|c3`.
pub const fn make_fourcc(c: [u8; 4]) -> u32 {
    ((c[0] as u32) << 24) | ((c[1] as u32) << 16) | ((c[2] as u32) << 8) | (c[3] as u32)
}

/// Unpack a fourcc into its four characters.
pub const fn fourcc_bytes(f: u32) -> [u8; 4] {
    [(f >> 24) as u8, (f >> 16) as u8, (f >> 8) as u8, f as u8]
}

/// Message types (the top 8 bits of msgid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Filler; also the "empty" marker of a sync slot.
    Padding = 0,
    /// Connection request; each side sends one.
    Connect = 1,
    /// Open a service: {fourcc, client_id, version, version_min}.
    Open = 2,
    /// Open accepted: {s16 server version} (or empty from old peers).
    OpenAck = 3,
    /// Close handshake.
    Close = 4,
    /// Service data, opaque to VCHIQ.
    Data = 5,
    /// Slave asks the master to fill its buffer: {pagelist bus addr, size}.
    BulkRx = 6,
    /// Slave asks the master to read its buffer: {pagelist bus addr, size}.
    BulkTx = 7,
    /// Master completed the slave's RX queue head: {s32 actual}.
    BulkRxDone = 8,
    /// Master completed the slave's TX queue head: {s32 actual}.
    BulkTxDone = 9,
    /// Legacy suspend.
    Pause = 10,
    /// Legacy resume.
    Resume = 11,
    /// Peer asks us not to suspend.
    RemoteUse = 12,
    /// Peer drops its use.
    RemoteRelease = 13,
    /// Acknowledge of a use.
    RemoteUseActive = 14,
}

impl MsgType {
    /// Decode a type byte; `None` for an unknown type (a protocol error, never a panic).
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => MsgType::Padding,
            1 => MsgType::Connect,
            2 => MsgType::Open,
            3 => MsgType::OpenAck,
            4 => MsgType::Close,
            5 => MsgType::Data,
            6 => MsgType::BulkRx,
            7 => MsgType::BulkTx,
            8 => MsgType::BulkRxDone,
            9 => MsgType::BulkTxDone,
            10 => MsgType::Pause,
            11 => MsgType::Resume,
            12 => MsgType::RemoteUse,
            13 => MsgType::RemoteRelease,
            14 => MsgType::RemoteUseActive,
            _ => return None,
        })
    }
}

/// Local service states (never on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServiceState {
    /// Port unused.
    Free = 0,
    /// Server added before connect.
    Hidden = 1,
    /// Server waiting for an OPEN.
    Listening = 2,
    /// Client sent OPEN, waiting for OPENACK/CLOSE.
    Opening = 3,
    /// Open (asynchronous).
    Open = 4,
    /// Open, messages go through the sync slot.
    OpenSync = 5,
    /// We initiated a close and wait for the peer's CLOSE.
    CloseSent = 6,
    /// The peer closed and we answered.
    CloseRecvd = 7,
    /// Closed server without auto_close: `close_service` makes it listen again.
    CloseWait = 8,
    /// Closed client (or rejected open).
    Closed = 9,
}

/// Connection states (local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Nothing sent.
    Disconnected = 0,
    /// CONNECT sent, waiting for the peer's.
    Connecting = 1,
    /// Both CONNECTs seen.
    Connected = 2,
    /// Legacy suspend (parsed and ignored).
    Pausing = 3,
    /// Legacy.
    PauseSent = 4,
    /// Legacy.
    Paused = 5,
    /// Legacy.
    Resuming = 6,
    /// Legacy.
    PauseTimeout = 7,
    /// Legacy.
    ResumeTimeout = 8,
    /// Torn down; the region is never handed back (docs/protocols/vchiq.md §6 teardown).
    Dead = 9,
}

/// Callback reasons (API-visible numbering, docs/protocols/vchiq.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// The service is open.
    ServiceOpened = 0,
    /// The service closed.
    ServiceClosed = 1,
    /// A message arrived.
    MessageAvailable = 2,
    /// A bulk transmit completed.
    BulkTransmitDone = 3,
    /// A bulk receive completed.
    BulkReceiveDone = 4,
    /// A bulk transmit was aborted.
    BulkTransmitAborted = 5,
    /// A bulk receive was aborted.
    BulkReceiveAborted = 6,
}

/// Pagelist types (docs/protocols/vchiq.md §5).
pub const PAGELIST_WRITE: u16 = 0;
/// Receive without fragments.
pub const PAGELIST_READ: u16 = 1;
/// Receive using fragment slot `k`: type = 2 + k.
pub const PAGELIST_READ_WITH_FRAGMENTS: u16 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_and_magic() {
        assert_eq!(VCHIQ_MAGIC, 0x5643_4849);
        assert_eq!(make_fourcc(*b"SMEM"), 0x534D_454D);
        assert_eq!(fourcc_bytes(make_fourcc(*b"echo")), *b"echo");
        assert_eq!(VCHIQ_MAX_MSG_SIZE, 4088);
        assert_eq!(VCHIQ_MAX_FRAGMENTS, 64);
    }

    #[test]
    fn msg_type_roundtrip() {
        for v in 0..=255u8 {
            match MsgType::from_u8(v) {
                Some(t) => assert_eq!(t as u8, v),
                None => assert!(v > 14),
            }
        }
    }
}
