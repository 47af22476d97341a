//! The protocol engine: one [`Vchiq`](crate::Vchiq) per shared region and role. `vchiq.rs` holds
//! the instance, its private state and the handler trait; the other files each add one concern
//! to it (`impl Vchiq` blocks): creation (`init`), the poll loop (`poll`, `poll_gate`), transmit
//! (`tx`), receive and the sync slot (`rx`), the service state machine (`open_close`, `service`),
//! bulk transfers (`bulk`, and the master's side in `bulk_master`), teardown, the blocking calls' one waiting loop (`waiting`), its
//! future-returning twins (`futures`) and the wakers the poll loop wakes for them (`wakers`), and
//! the counters.

pub(crate) mod bulk;
pub(crate) mod bulk_master;
pub(crate) mod counters;
pub(crate) mod futures;
pub(crate) mod init;
pub(crate) mod open_close;
pub(crate) mod poll;
pub(crate) mod poll_gate;
pub(crate) mod rx;
pub(crate) mod service;
pub(crate) mod slot_loan;
pub(crate) mod teardown;
pub(crate) mod tx;
pub(crate) mod tx_loan;
pub(crate) mod vchiq;
pub(crate) mod waiting;
pub(crate) mod wakers;
