//! VCHI clients on top of the VCHIQ core (ARM side). The VideoCore-side servers the simulator
//! runs for them live in `crate::sim::vchi` (feature `sim`).
//!
//! | file | holds |
//! |---|---|
//! | [`error`] | [`VchiError`], the one error of this layer (converts into `fwipc_transport_api::Error`) |
//! | [`fourcc`] | service fourccs (`'SMEM'`, `'echo'`, `'func'`, `'fun2'`) |
//! | [`link`] | [`ServiceLink`] / [`BulkLink`] / [`link::BulkPipeline`]: what a client needs from an open VCHIQ service, and [`VcService`]: what a VideoCore-side handler gets driven with |
//! | [`smem_wire`] | vc-sm-cma `'SMEM'` message layouts (`#[repr(C)]` zerocopy) and their bounds-checked parsers |
//! | [`smem_client`] | [`Smem`], the typed ARM-side client: connecting, the request/reply exchange, alloc/free/lock/unlock of VideoCore memory |
//! | [`smem_imports`] | host memory the VideoCore sees through [`Smem`]: imports, blocks lent on VC_MEM_REQUEST through a [`smem_client::HostMemory`], RELEASED events |
//! | [`vc_mem`] | the vc_mem query of VideoCore memory (base, size, load address) from the firmware's DT `reg` or the mailbox property tag |
//! | [`test_wire`] | the `vchiq_test` wire formats: echo magics, `test_params`, fun2 sub-test message, data patterns |
//! | [`test_client`] | the ARM-side `vchiq_test` routines: ping, ctrl echo, bulk echo, fun2 |
//! | [`core_link`] | the client seams over the real core: [`core_link::CoreLink`] (ARM client, waiting with a `Wait`) |
//! | [`service_host`] | [`service_host::VcServiceHost`]: runs a [`VcService`] per open service on the VideoCore side of the core |
//! | `fuzzing` | one `fn(&[u8])` per parser of remote input (doc-hidden) |
//!
//! Everything here is `no_std` + `alloc`. Client request paths encode into stack buffers and do not
//! allocate.
//!
//! <!-- The link targets below are `crate::`-qualified on purpose: `pub mod vchi;` also carries
//! an outer `///` doc in lib.rs, so rustdoc resolves this whole block from the crate root, where
//! bare names like `error` resolve to the wrong module or not at all. -->
//!
//! [`error`]: crate::vchi::error
//! [`VchiError`]: crate::vchi::VchiError
//! [`fourcc`]: crate::vchi::fourcc
//! [`link`]: crate::vchi::link
//! [`ServiceLink`]: crate::vchi::ServiceLink
//! [`BulkLink`]: crate::vchi::BulkLink
//! [`link::BulkPipeline`]: crate::vchi::link::BulkPipeline
//! [`VcService`]: crate::vchi::VcService
//! [`smem_wire`]: crate::vchi::smem_wire
//! [`smem_client`]: crate::vchi::smem_client
//! [`Smem`]: crate::vchi::Smem
//! [`smem_client::HostMemory`]: crate::vchi::smem_client::HostMemory
//! [`smem_imports`]: crate::vchi::smem_imports
//! [`vc_mem`]: crate::vchi::vc_mem
//! [`test_wire`]: crate::vchi::test_wire
//! [`test_client`]: crate::vchi::test_client
//! [`core_link`]: crate::vchi::core_link
//! [`core_link::CoreLink`]: crate::vchi::core_link::CoreLink
//! [`service_host`]: crate::vchi::service_host
//! [`service_host::VcServiceHost`]: crate::vchi::service_host::VcServiceHost

pub mod core_link;
pub mod error;
pub mod fourcc;
#[cfg(any(all(test, feature = "sim"), feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod service_host;
pub mod smem_client;
pub mod smem_imports;
pub mod smem_wire;
pub mod test_client;
pub mod test_wire;
pub mod vc_mem;

pub use error::VchiError;
pub use link::{BulkLink, ServiceLink, VcAction, VcService};
pub use smem_client::{Smem, SmemHandle, SmemImport};
pub use vc_mem::VcMemInfo;
