//! The hosted simulation (feature `sim`): a simulated SMMU/bus ([`bus`]), a datagram link
//! ([`link`]), a DSP running in its own thread with a real process table and memory maps and
//! every fault knob ([`dsp`]), the test objects it hosts ([`objects`]), and the conformance
//! fixture (`fixture::FastRpcFixture`, feature `fixtures`) beside the whole simulated system
//! ([`fixture::SimSystem`]).

pub mod bus;
pub mod dsp;
pub mod fixture;
pub mod link;
pub mod objects;

pub use bus::SimBus;
pub use dsp::SimDsp;
#[cfg(feature = "fixtures")]
pub use fixture::FastRpcFixture;
pub use link::SimLink;
