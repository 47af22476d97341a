//! `loopback`: the reference backend. An in-process transport whose "remote" is a thread that
//! reads requests straight out of the shared pool buffers (the analog of shared memory) and
//! answers through a reply ring of 20-byte wire records ([`wire::ReplyRecord`]).
//!
//! It is deliberately small, and it is the example to copy when porting a protocol: tokens from a
//! [`fwipc_transport_api::TokenAllocator`], buffers from a [`fwipc_transport_api::MsgPool`] with the
//! remote's reference held as a loan, the Linux poll-state rules for timed-out transfers (the buffer
//! stays remote-owned until the late reply), a [`fwipc_transport_api::Lifecycle`] for shutdown, and
//! a hostile-input-safe parser. It passes the whole conformance suite.

mod datagram;
mod dgram_state;
mod fixture;
#[cfg(test)]
mod forged_tests;
#[cfg(test)]
mod layout_tests;
mod remote;
#[cfg(test)]
mod reset_tests;
#[cfg(test)]
mod spinning_tests;
mod transport;
pub mod wire;

pub use datagram::LoopbackPeer;
pub use dgram_state::{PEER_ADDR, RX_BUFS};
pub use fixture::LoopbackFixture;
pub use transport::{LoopbackTransport, MAX_MSG, MAX_MSG_SIZE};
