//! The two sides of an rpmsg virtio device and which virtqueue each receives on.

/// Which side of the virtio device this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The virtio driver (the host, Linux's `virtio_rpmsg_bus`): owns and posts every buffer.
    Driver,
    /// The virtio device (the remote processor, e.g. OpenAMP firmware): fills the driver's
    /// receive buffers and reads its transmit buffers.
    Device,
}

/// Virtqueue 0: the driver's receive queue (device → driver messages).
pub const VQ_DRIVER_RX: u16 = 0;
/// Virtqueue 1: the driver's transmit queue (driver → device messages).
pub const VQ_DRIVER_TX: u16 = 1;

impl Role {
    /// The virtqueue this side receives messages on.
    pub const fn rx_queue(self) -> u16 {
        match self {
            Role::Driver => VQ_DRIVER_RX,
            Role::Device => VQ_DRIVER_TX,
        }
    }

    /// The virtqueue this side sends messages on.
    pub const fn tx_queue(self) -> u16 {
        match self {
            Role::Driver => VQ_DRIVER_TX,
            Role::Device => VQ_DRIVER_RX,
        }
    }
}
