//! The SCMI device behind the queues, independent of vhost-user: the platform model, the
//! command-queue and event-queue handling, and the counters. Everything the guest writes is
//! untrusted here: every descriptor chain is checked (see [`crate::chain`]) before a byte of it is
//! used, a bad chain gets an error reply or is returned unused and counted, and no guest input
//! panics.
//!
//! The functions take a `virtio_queue::Queue` and any `vm_memory::GuestMemory`, so the tests
//! drive them with `virtio-queue`'s mock queues over a `GuestMemoryMmap`, exactly as the
//! vhost-user backend ([`crate::backend`]) drives them with the guest's rings.

use fwipc_scmi_virtio::platform::{Platform, PlatformConfig, PlatformModel, P2A_MSG_MAX};
use fwipc_scmi_virtio::status::code;
use log::{debug, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use crate::chain::{self, ChainError, CmdChain};

/// Header + status: the smallest reply.
pub const REPLY_MIN: usize = 8;
/// Reply bytes the daemon fills at most (a larger posted buffer is used up to this; listings are
/// paginated to `min(posted, REPLY_MAX)`).
pub const REPLY_MAX: usize = 4096;

/// Malformed chains logged at `warn` before the rest go to `debug`.
pub const COMPLAINTS_LOGGED: u64 = 16;

/// What happened to one command chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdOutcome {
    /// Served by the platform model: `len` reply bytes written.
    Replied(u32),
    /// A malformed chain answered with header + `status` (8 bytes).
    Rejected(ChainError, i32),
    /// A malformed chain without a usable reply buffer: returned with used length 0.
    Dropped(ChainError),
}

impl CmdOutcome {
    /// The used length to report for the chain.
    pub fn used_len(self) -> u32 {
        match self {
            CmdOutcome::Replied(n) => n,
            CmdOutcome::Rejected(..) => REPLY_MIN as u32,
            CmdOutcome::Dropped(_) => 0,
        }
    }
}

/// Counters of the device (logged when the daemon exits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Command chains served by the platform model.
    pub commands: u64,
    /// Malformed command chains answered with an error status.
    pub rejected: u64,
    /// Malformed command chains returned unused (no reply buffer, or one too small or
    /// unwritable).
    pub dropped: u64,
    /// Event-queue chains returned unused because they were malformed.
    pub bad_event_buffers: u64,
    /// P2A messages (notifications, delayed responses) delivered on the event queue.
    pub p2a_delivered: u64,
    /// P2A messages lost because their event buffer could not be written.
    pub p2a_lost: u64,
    /// `add_used` failures (a used ring outside guest memory).
    pub used_ring_errors: u64,
}

/// The device: a platform model built from the configuration, rebuilt on every driver
/// (re)initialisation, and the counters.
pub struct Device {
    cfg: PlatformConfig,
    platform: Platform,
    stats: DeviceStats,
    complaints: u64,
    req: Vec<u8>,
    resp: Vec<u8>,
}

impl Device {
    /// A device serving `cfg`.
    pub fn new(cfg: PlatformConfig) -> Self {
        let platform = Platform::new(cfg.clone());
        Device {
            cfg,
            platform,
            stats: DeviceStats::default(),
            complaints: 0,
            req: Vec::with_capacity(chain::REQUEST_MAX),
            resp: vec![0; REPLY_MAX],
        }
    }

    /// Start afresh (a driver negotiating features is a new driver): a new platform model with
    /// P2A channels as negotiated. Counters are kept.
    pub fn reset(&mut self, p2a: bool) {
        let mut cfg = self.cfg.clone();
        cfg.p2a = p2a;
        self.platform = Platform::new(cfg);
    }

    /// The platform model.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The platform model, mutably (tests queue notifications through it).
    #[cfg(test)]
    pub fn platform_mut(&mut self) -> &mut Platform {
        &mut self.platform
    }

    /// The periodic sensor event: queue SENSOR_UPDATE for every enabled sensor whose
    /// continuous updates the agent switched on. Returns how many were queued.
    pub fn sensor_tick(&mut self) -> usize {
        self.platform.sensor_tick()
    }

    /// Counters.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Log a malformed chain: the first [`COMPLAINTS_LOGGED`] at `warn`, the rest at `debug`
    /// (a guest cannot flood the log; every one is counted).
    fn complain(&mut self, msg: std::fmt::Arguments<'_>) {
        self.complaints = self.complaints.saturating_add(1);
        if self.complaints <= COMPLAINTS_LOGGED {
            warn!("{msg}");
            if self.complaints == COMPLAINTS_LOGGED {
                warn!("further malformed chains are logged at debug level (and counted)");
            }
        } else {
            debug!("{msg}");
        }
    }

    /// Serve one command chain (not yet returned to the guest): check it, run the request
    /// through the platform model, write the reply. The caller returns the chain with
    /// [`CmdOutcome::used_len`].
    pub fn serve_command<M: GuestMemory>(&mut self, mem: &M, c: &CmdChain) -> CmdOutcome {
        let outcome = self.serve_checked(mem, c);
        match outcome {
            CmdOutcome::Replied(_) => self.stats.commands += 1,
            CmdOutcome::Rejected(e, s) => {
                self.stats.rejected += 1;
                self.complain(format_args!(
                    "command chain {}: {e}; answered with status {s}",
                    c.head
                ));
            }
            CmdOutcome::Dropped(e) => {
                self.stats.dropped += 1;
                self.complain(format_args!(
                    "command chain {}: {e}; returned without a reply",
                    c.head
                ));
            }
        }
        outcome
    }

    fn serve_checked<M: GuestMemory>(&mut self, mem: &M, c: &CmdChain) -> CmdOutcome {
        let room = c.reply_room();
        let problem = c.problem();
        if let Some(e) = problem {
            if room < REPLY_MIN as u64 {
                return CmdOutcome::Dropped(e);
            }
            return self.reject(mem, c, e);
        }
        if room < REPLY_MIN as u64 {
            return CmdOutcome::Dropped(if room == 0 {
                ChainError::NoReplyBuffer
            } else {
                ChainError::ReplyTooSmall
            });
        }
        if let Err(e) = c.read_request(mem, &mut self.req) {
            return self.reject(mem, c, e);
        }
        // Paginate to what the agent posted (capped): the model never writes past `resp`.
        let space = usize::try_from(room).map_or(REPLY_MAX, |r| r.min(REPLY_MAX));
        let resp = &mut self.resp[..space];
        let n = self.platform.handle_command(&self.req, resp).min(space);
        debug!("command {} -> {} reply bytes", c.head, n);
        if n < REPLY_MIN {
            return CmdOutcome::Dropped(ChainError::ReplyTooSmall);
        }
        match c.write_reply(mem, &self.resp[..n]) {
            Ok(()) => CmdOutcome::Replied(n as u32),
            Err(e) => CmdOutcome::Dropped(e),
        }
    }

    /// Answer a malformed chain with the request's header (when one could be read, else 0) and
    /// `status`.
    fn reject<M: GuestMemory>(&mut self, mem: &M, c: &CmdChain, e: ChainError) -> CmdOutcome {
        let status = e.status();
        let header = c.header(mem).unwrap_or(0);
        let mut reply = [0u8; REPLY_MIN];
        reply[..4].copy_from_slice(&header.to_le_bytes());
        reply[4..].copy_from_slice(&status.to_le_bytes());
        match c.write_reply(mem, &reply) {
            Ok(()) => CmdOutcome::Rejected(e, status),
            Err(_) => CmdOutcome::Dropped(e),
        }
    }

    /// Serve every available command chain of `queue` (at most the queue size per call; a
    /// guest that posts more is served on its next kick). Returns the chains returned to the
    /// guest.
    pub fn process_cmdq<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> usize {
        let budget = usize::from(queue.size()).max(1);
        let mut n = 0;
        while n < budget {
            let Some(dc) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let c = CmdChain::walk(dc);
            let outcome = self.serve_command(mem, &c);
            n += 1;
            if let Err(e) = queue.add_used(mem, c.head, outcome.used_len()) {
                self.stats.used_ring_errors += 1;
                warn!("cmdq: cannot return chain {}: {e}", c.head);
                break;
            }
        }
        n
    }

    /// Deliver pending P2A messages (delayed responses, notifications) into the event buffers
    /// the guest posted on `queue`. A malformed event chain is returned unused and counted; a
    /// buffer too small for the next delayed response is left in the ring for later. Returns
    /// the chains returned to the guest.
    pub fn deliver_p2a<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> usize {
        let budget = usize::from(queue.size()).max(1);
        let mut n = 0;
        while n < budget && self.platform.pending_p2a() > 0 {
            let Some(dc) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let c = CmdChain::walk(dc);
            let used = match c.event_problem() {
                Some(e) => {
                    self.stats.bad_event_buffers += 1;
                    self.complain(format_args!(
                        "eventq chain {}: {e}; returned unused",
                        c.head
                    ));
                    0
                }
                None => {
                    let space =
                        usize::try_from(c.reply_room()).map_or(P2A_MSG_MAX, |r| r.min(P2A_MSG_MAX));
                    let mut buf = [0u8; P2A_MSG_MAX];
                    let Some(len) = self.platform.next_p2a(&mut buf[..space]) else {
                        // Nothing that fits (a delayed response waits for a larger buffer):
                        // keep the buffer in the ring.
                        queue.go_to_previous_position();
                        break;
                    };
                    let len = len.min(space);
                    match c.write_reply(mem, &buf[..len]) {
                        Ok(()) => {
                            self.stats.p2a_delivered += 1;
                            len as u32
                        }
                        Err(e) => {
                            self.stats.p2a_lost += 1;
                            self.complain(format_args!(
                                "eventq chain {}: {e}; P2A message lost",
                                c.head
                            ));
                            0
                        }
                    }
                }
            };
            n += 1;
            if let Err(e) = queue.add_used(mem, c.head, used) {
                self.stats.used_ring_errors += 1;
                warn!("eventq: cannot return chain {}: {e}", c.head);
                break;
            }
        }
        n
    }
}

impl ChainError {
    /// The SCMI status a malformed chain is answered with: PROTOCOL_ERROR for a request that is
    /// not a message (no header, or longer than any message), COMMS_ERROR for a chain the
    /// transport cannot carry (wrong directions, too many descriptors, memory it cannot read).
    pub fn status(self) -> i32 {
        match self {
            ChainError::RequestTooShort | ChainError::RequestTooLong => code::PROTOCOL_ERROR,
            _ => code::COMMS_ERROR,
        }
    }
}
