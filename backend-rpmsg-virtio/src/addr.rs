//! The fixed numbers of the rpmsg protocol as Linux's `virtio_rpmsg_bus` and OpenAMP use them
//! (docs/protocols/rpmsg.md §1).

/// The name-service endpoint: announcements (`NsMsg`) are sent to this address.
pub const NS_ADDR: u32 = 53;
/// "Any address": asks the endpoint table to allocate one; never a valid destination.
pub const ADDR_ANY: u32 = 0xFFFF_FFFF;
/// Addresses below this are reserved for fixed services (like [`NS_ADDR`]); dynamic allocation
/// starts here.
pub const RESERVED_ADDRESSES: u32 = 1024;
/// First address of the range this crate uses for the per-transfer reply addresses of
/// request/reply calls (address = base + transfer token). Endpoint allocation stays below it.
pub const TRANSFER_ADDR_BASE: u32 = 0x0001_0000;
/// Size of one rpmsg buffer (header + payload), the Linux default.
pub const BUF_SIZE: usize = 512;
/// Size of the rpmsg header.
pub const HDR_SIZE: usize = 16;
/// Largest payload in one buffer.
pub const MAX_PAYLOAD: usize = BUF_SIZE - HDR_SIZE;
/// Size of a name in a name-service message, including the terminating NUL.
pub const NAME_SIZE: usize = 32;
/// The virtio device id of an rpmsg device.
pub const VIRTIO_ID_RPMSG: u32 = 7;
/// Feature bit: the device runs a name service (`VIRTIO_RPMSG_F_NS`).
pub const VIRTIO_RPMSG_F_NS: u32 = 0;
