//! The SCMI agent: commands over any [`Transport`], with bounded waits, delayed responses and
//! notification dispatch.
//!
//! Transport contract (what any `T: Transport` must do for SCMI): `Request::target` is
//! `(protocol_id << 8) | message_id` and the payload is the parameters (LE words); the transport
//! adds the header and token and matches the reply; `fetch_response` yields the return values
//! after the status word, or `Err(Error::Remote(status))`; `Ticket::token()` is the wire token;
//! unsolicited P2A messages come from `fetch_notification` as `Notification { source: raw header,
//! len }` with the bytes after the header (a delayed response starts with its status).

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use fwipc_transport_api::{
    wait_done, Clock, Completion, Deadline, Request, Ticket, Transport, TxOutcome, Wait,
};

use super::error::{self, Malformed, ScmiError};
use super::p2a::{Callback, DelayedTable, Event, Filter, SlotState, Subscribers, SubscriptionId};
use super::wire::{Params, Reader};
use crate::header::{make_target, Header, MsgType, TOKEN_MASK};
use crate::status::ScmiStatus;

/// Largest reply (return values after the status) a typed command reads, in bytes. Multi-part
/// replies are paginated by the platform to the transport's buffer, which is smaller (virtio:
/// 128 bytes by default).
pub const MAX_REPLY: usize = 512;

/// Default size of the buffer P2A messages are fetched into (body after the header): a
/// SENSOR_UPDATE of 63 axes (8 + 63 × 16 bytes) fits. Must be at least the transport's eventq
/// buffer size, else a larger message stays queued in the transport (counted in `bad_p2a`).
pub const MAX_P2A: usize = 1024;

/// Attempts [`Scmi::pump`] makes to take the P2A table before giving up.
const PUMP_LOCK_SPINS: u32 = 100_000;
/// P2A messages one [`Scmi::pump`] call takes at most; the rest waits for the next call.
pub const PUMP_BUDGET: usize = 64;

/// Agent configuration. The defaults follow docs/protocols/scmi.md §2.1 and §8 item 2: a 60 s
/// command deadline (the Linux virtio value, "for non-realtime virtio devices") and a
/// delayed-response deadline that is never shorter than it (Linux's fixed 2 s is the defect,
/// docs/protocols/scmi.md §7).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Deadline of each synchronous reply.
    pub command_timeout: Duration,
    /// Deadline of each delayed response, counted from the synchronous reply. Must be
    /// `>= command_timeout` ([`Scmi::new`] rejects a shorter one).
    pub delayed_timeout: Duration,
    /// Cap on the rounds of one multi-part enumeration (docs/protocols/scmi.md §8 item 7).
    pub max_rounds: u32,
    /// Delayed responses that may be awaited at once.
    pub max_pending_delayed: usize,
    /// Notification subscribers.
    pub max_subscribers: usize,
    /// Largest delayed response body kept per waiter (status included); a longer one fails
    /// the command with `BufferTooSmall`.
    pub delayed_buf_size: usize,
    /// Size of the P2A fetch buffer (allocated once at setup).
    pub p2a_buf_size: usize,
    /// How the agent waits for replies and delayed responses: `Wait::Poll` (the default),
    /// `Wait::SpinThenYield` with a relax step (`std::thread::yield_now`, `wfe`), or
    /// `Wait::Completion` with a parker the transport's completion path wakes. The same
    /// [`Wait`] every fwipc transport call takes; `'static` because the agent keeps it.
    pub wait: Wait<'static>,
    /// Completion mode of every request: `Interrupt` needs the embedder to drive the
    /// transport's completion (e.g. `ScmiVirtio::complete` from the IRQ handler); `Polled`
    /// lets the waiting caller drain the queue itself (bare metal without interrupts).
    pub completion: Completion,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            command_timeout: Duration::from_secs(60),
            delayed_timeout: Duration::from_secs(60),
            max_rounds: 1024,
            max_pending_delayed: 8,
            max_subscribers: 8,
            delayed_buf_size: 256,
            p2a_buf_size: MAX_P2A,
            wait: Wait::Poll,
            completion: Completion::Interrupt,
        }
    }
}

impl Config {
    /// Every request in polling mode.
    pub fn polled(mut self) -> Self {
        self.completion = Completion::Polled;
        self
    }

    /// The command and delayed-response deadlines.
    pub fn with_timeouts(mut self, command: Duration, delayed: Duration) -> Self {
        self.command_timeout = command;
        self.delayed_timeout = delayed;
        self
    }
}

/// Counters of the protocol layer (the transport keeps its own).
#[derive(Debug, Default)]
struct Counters {
    commands: AtomicU64,
    notifications: AtomicU64,
    unclaimed_notifications: AtomicU64,
    delayed_responses: AtomicU64,
    unexpected_delayed: AtomicU64,
    bad_p2a: AtomicU64,
    malformed_replies: AtomicU64,
    delayed_timeouts: AtomicU64,
}

/// Snapshot of the protocol layer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentStats {
    /// Commands sent.
    pub commands: u64,
    /// Notifications received (valid header).
    pub notifications: u64,
    /// Notifications no subscriber wanted.
    pub unclaimed_notifications: u64,
    /// Delayed responses matched to a waiter.
    pub delayed_responses: u64,
    /// Delayed responses nobody waited for (late, duplicate, wrong identity): dropped.
    pub unexpected_delayed: u64,
    /// P2A messages with an invalid header or type: dropped.
    pub bad_p2a: u64,
    /// Replies rejected by a parser.
    pub malformed_replies: u64,
    /// Delayed responses that did not arrive in time.
    pub delayed_timeouts: u64,
}

/// Ends a transfer when dropped.
struct OpenTransfer<'a, T: Transport> {
    t: &'a T,
    ticket: Option<Ticket>,
}

impl<T: Transport> Drop for OpenTransfer<'_, T> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.t.mark_txdone(t, TxOutcome::Done);
        }
    }
}

fn bump(c: &AtomicU64) {
    // Relaxed: independent statistics counters, nothing is published through them.
    c.fetch_add(1, Ordering::Relaxed);
}

/// The SCMI agent over transport `T`, timed by clock `C`.
///
/// `Scmi` is `Sync` when `T` is: any number of threads may issue commands at once (the transport
/// bounds how many are in flight). Typed protocol views: [`Scmi::base`], [`Scmi::sensor`],
/// [`Scmi::clock`], [`Scmi::perf`], [`Scmi::power`], [`Scmi::reset`], [`Scmi::voltage`],
/// [`Scmi::system`].
pub struct Scmi<T: Transport, C: Clock> {
    t: T,
    clock: C,
    cfg: Config,
    /// Delayed-response table. Also serialises `fetch_notification` against the registration of
    /// a just-sent asynchronous command, so no delayed response can be fetched between the
    /// `send` and the registration of its token.
    delayed: spin::Mutex<DelayedTable>,
    subscribers: spin::Mutex<Subscribers>,
    counters: Counters,
}

impl<T: Transport, C: Clock> core::fmt::Debug for Scmi<T, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scmi")
            .field("config", &self.cfg)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// An agent over `transport`. `InvalidArgument` if the delayed-response deadline is shorter
    /// than the command deadline, or a capacity is zero/too large.
    pub fn new(transport: T, clock: C, cfg: Config) -> error::Result<Self> {
        if cfg.delayed_timeout < cfg.command_timeout
            || cfg.max_rounds == 0
            || cfg.delayed_buf_size < 4
            || cfg.p2a_buf_size < cfg.delayed_buf_size
        {
            return Err(ScmiError::InvalidArgument);
        }
        Ok(Scmi {
            t: transport,
            clock,
            delayed: spin::Mutex::new(DelayedTable::new(
                cfg.max_pending_delayed,
                cfg.delayed_buf_size,
                cfg.p2a_buf_size,
            )),
            subscribers: spin::Mutex::new(Subscribers::new(cfg.max_subscribers)),
            cfg,
            counters: Counters::default(),
        })
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.t
    }

    /// The time source.
    pub fn time_source(&self) -> &C {
        &self.clock
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters of the protocol layer.
    pub fn stats(&self) -> AgentStats {
        // Relaxed: see `bump`.
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        AgentStats {
            commands: r(&c.commands),
            notifications: r(&c.notifications),
            unclaimed_notifications: r(&c.unclaimed_notifications),
            delayed_responses: r(&c.delayed_responses),
            unexpected_delayed: r(&c.unexpected_delayed),
            bad_p2a: r(&c.bad_p2a),
            malformed_replies: r(&c.malformed_replies),
            delayed_timeouts: r(&c.delayed_timeouts),
        }
    }

    /// Count a command about to be sent.
    pub(crate) fn count_command(&self) {
        bump(&self.counters.commands);
    }

    /// Count a reply a parser rejected and pass the error on.
    pub(crate) fn malformed(&self, m: Malformed) -> ScmiError {
        bump(&self.counters.malformed_replies);
        log::warn!("scmi: malformed reply: {m}");
        ScmiError::Malformed(m)
    }

    /// Run `parse` over a reply, counting parse failures.
    pub(crate) fn parse<R>(
        &self,
        reply: &[u8],
        parse: impl FnOnce(&mut Reader<'_>) -> Result<R, Malformed>,
    ) -> error::Result<R> {
        parse(&mut Reader::new(reply)).map_err(|m| self.malformed(m))
    }

    fn wait(&self, ticket: &Ticket, deadline: Deadline) -> fwipc_transport_api::Result<()> {
        wait_done(&self.t, ticket, &self.clock, deadline, self.cfg.wait)
    }

    /// Send one command with raw parameter bytes and copy the return values (after the status)
    /// into `resp`; returns their length. A non-SUCCESS status is `ScmiError::Status`.
    pub fn command_raw(
        &self,
        protocol: u8,
        message: u8,
        params: &[u8],
        resp: &mut [u8],
    ) -> error::Result<usize> {
        self.command_raw_timeout(protocol, message, params, resp, self.cfg.command_timeout)
    }

    /// [`Scmi::command_raw`] with its own deadline instead of the configured one (e.g. a short
    /// one for a probe, or a long one for a command known to be slow on this platform).
    pub fn command_raw_timeout(
        &self,
        protocol: u8,
        message: u8,
        params: &[u8],
        resp: &mut [u8],
        timeout: Duration,
    ) -> error::Result<usize> {
        self.count_command();
        let req = self.request(make_target(protocol, message), params);
        let ticket = self.t.send(&req)?;
        let (n, ticket) = self.await_reply(ticket, resp, timeout)?;
        self.t.mark_txdone(ticket, TxOutcome::Done);
        Ok(n)
    }

    pub(crate) fn request<'p>(&self, target: u32, payload: &'p [u8]) -> Request<'p> {
        Request {
            target,
            payload,
            completion: self.cfg.completion,
        }
    }

    /// Wait for `ticket`'s reply and copy it into `resp`. On success the transfer stays open
    /// (the ticket is handed back) so its token stays reserved; on failure it is ended.
    fn await_reply(
        &self,
        ticket: Ticket,
        resp: &mut [u8],
        timeout: Duration,
    ) -> error::Result<(usize, Ticket)> {
        let deadline = Deadline::after(&self.clock, timeout);
        let waited = self.wait(&ticket, deadline);
        if let Err(e) = waited {
            self.t.mark_txdone(ticket, TxOutcome::after_wait(&waited));
            return Err(e.into());
        }
        match self.t.fetch_response(&ticket, resp) {
            Ok(n) => Ok((n, ticket)),
            Err(e) => {
                self.t.mark_txdone(ticket, TxOutcome::Done);
                Err(e.into())
            }
        }
    }

    /// A typed command: `params` words, reply parsed by `parse` from the return values.
    pub(crate) fn cmd<R>(
        &self,
        protocol: u8,
        message: u8,
        params: &[u32],
        parse: impl FnOnce(&mut Reader<'_>) -> Result<R, Malformed>,
    ) -> error::Result<R> {
        let p = Params::words(params);
        let mut buf = [0u8; MAX_REPLY];
        let n = self.command_raw(protocol, message, p.as_bytes(), &mut buf)?;
        self.parse(buf.get(..n).unwrap_or(&[]), parse)
    }

    /// A command whose reply is the status only. Extra return values are tolerated and ignored
    /// (vhost-device-scmi appends a word to CONTINUOUS_UPDATE_NOTIFY, docs/protocols/scmi.md §6).
    pub(crate) fn cmd_status(
        &self,
        protocol: u8,
        message: u8,
        params: &[u32],
    ) -> error::Result<()> {
        self.cmd(protocol, message, params, |_| Ok(()))
    }

    /// An asynchronous command: send, take the synchronous reply (status only expected), then
    /// wait for the delayed response with the same token, protocol and message id. The delayed
    /// response body (after its status) goes to `parse`.
    pub(crate) fn cmd_delayed<R>(
        &self,
        protocol: u8,
        message: u8,
        params: &[u32],
        parse: impl FnOnce(&mut Reader<'_>) -> Result<R, Malformed>,
    ) -> error::Result<R> {
        let p = Params::words(params);
        let slot = {
            let mut table = self.delayed.lock();
            let slot = table
                .reserve()
                .ok_or(ScmiError::Transport(fwipc_transport_api::Error::Busy))?;
            bump(&self.counters.commands);
            let req = self.request(make_target(protocol, message), p.as_bytes());
            match self.t.send(&req) {
                Ok(ticket) => {
                    // The wire token is 10 bits; a transport's ticket token is that token.
                    let token = (ticket.token() as u16) & TOKEN_MASK;
                    table.set(
                        slot,
                        SlotState::Waiting {
                            protocol,
                            message,
                            token,
                        },
                    );
                    (slot, ticket)
                }
                Err(e) => {
                    table.set(slot, SlotState::Free);
                    return Err(e.into());
                }
            }
        };
        let (slot, ticket) = slot;
        let mut sync = [0u8; MAX_REPLY];
        let ticket = match self.await_reply(ticket, &mut sync, self.cfg.command_timeout) {
            Ok((_, t)) => t,
            Err(e) => {
                self.delayed.lock().set(slot, SlotState::Free);
                return Err(e);
            }
        };
        // Keep the transfer open until the delayed response is in (or given up on): its token
        // stays reserved in the transport, so no other command can be issued with the same
        // token + protocol + message id while this one waits (docs/protocols/scmi.md §8 item 5).
        let _open = OpenTransfer {
            t: &self.t,
            ticket: Some(ticket),
        };
        let deadline = Deadline::after(&self.clock, self.cfg.delayed_timeout);
        let mut polls: u32 = 0;
        loop {
            self.pump();
            {
                let mut table = self.delayed.lock();
                match table.state(slot) {
                    SlotState::Arrived { len } => {
                        // Parse in place (under the table lock: nothing here blocks).
                        let body = table
                            .slots
                            .get(slot)
                            .and_then(|s| s.buf.get(..len))
                            .unwrap_or(&[]);
                        let mut r = Reader::new(body);
                        let res = match r.i32() {
                            Err(m) => Err(self.malformed(m)),
                            Ok(status) => match ScmiStatus::check(status) {
                                Err(s) => Err(ScmiError::Status(s)),
                                Ok(()) => self.parse(r.rest(), parse),
                            },
                        };
                        table.set(slot, SlotState::Free);
                        return res;
                    }
                    SlotState::Overflow => {
                        table.set(slot, SlotState::Free);
                        return Err(ScmiError::BufferTooSmall);
                    }
                    _ => {}
                }
                if deadline.expired(&self.clock) {
                    table.set(slot, SlotState::Free);
                    bump(&self.counters.delayed_timeouts);
                    return Err(ScmiError::Transport(fwipc_transport_api::Error::Timeout));
                }
            }
            // Nothing wakes this loop (the response arrives through `pump`): pause the configured
            // way, a parker napping briefly.
            polls = polls.saturating_add(1);
            self.cfg.wait.pause(polls, Duration::from_micros(50));
        }
    }

    /// Drain pending P2A messages: notifications go to subscribers, delayed responses to their
    /// waiters; anything else is counted and dropped. Returns the number of messages taken.
    /// Bounded: at most [`PUMP_BUDGET`] messages per call (each `fetch_notification` under it is
    /// bounded by the transport's own drain budget), so a platform that keeps sending cannot keep
    /// the caller; the rest waits for the next call. If the table stays busy (another pump
    /// delivering, or a re-entrant call from a callback) it returns what it took.
    pub fn pump(&self) -> usize {
        let mut n = 0;
        while n < PUMP_BUDGET {
            // Bounded wait for the table: it is held only briefly (a waiter checking its slot,
            // or another pump that delivers everything itself). Bounded rather than blocking so
            // that a callback calling `pump` by mistake returns instead of deadlocking.
            let Some(mut guard) = self.lock_table_bounded() else {
                return n;
            };
            let table = &mut *guard;
            let note = match self.t.fetch_notification(&mut table.pump_buf) {
                Ok(Some(note)) => note,
                Ok(None) => return n,
                Err(e) => {
                    bump(&self.counters.bad_p2a);
                    log::warn!("scmi: fetch_notification failed: {e}");
                    return n;
                }
            };
            n += 1;
            let payload = table.pump_buf.get(..note.len).unwrap_or(&[]);
            let header = match Header::decode(note.source) {
                Ok(h) => h,
                Err(e) => {
                    bump(&self.counters.bad_p2a);
                    log::warn!("scmi: P2A message dropped: {e}");
                    continue;
                }
            };
            match header.msg_type {
                MsgType::DelayedResponse => {
                    if table.slots_deliver(&header, note.len) {
                        bump(&self.counters.delayed_responses);
                    } else {
                        bump(&self.counters.unexpected_delayed);
                        log::warn!("scmi: unexpected delayed response {header:?} dropped");
                    }
                }
                MsgType::Notification => {
                    bump(&self.counters.notifications);
                    // Dispatch under the table lock: the payload lives in its buffer, and the
                    // order of notifications is kept across concurrent pumps.
                    let ev = Event { header, payload };
                    if self.subscribers.lock().dispatch(&ev) == 0 {
                        bump(&self.counters.unclaimed_notifications);
                    }
                }
                MsgType::Command => {
                    bump(&self.counters.bad_p2a);
                    log::warn!("scmi: command-type P2A message dropped");
                }
            }
        }
        n
    }

    fn lock_table_bounded(&self) -> Option<spin::MutexGuard<'_, DelayedTable>> {
        for _ in 0..PUMP_LOCK_SPINS {
            if let Some(g) = self.delayed.try_lock() {
                return Some(g);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Call `cb` for every notification passing `filter`. `None` if the table is full.
    pub fn subscribe(&self, filter: Filter, cb: Callback) -> Option<SubscriptionId> {
        self.subscribers.lock().add(filter, cb)
    }

    /// Remove a subscriber; `false` if it was not subscribed.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.subscribers.lock().remove(id)
    }

    /// The transport's own counters.
    pub fn transport_stats(&self) -> fwipc_transport_api::Stats {
        self.t.stats()
    }
}
