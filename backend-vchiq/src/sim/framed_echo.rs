//! The VideoCore-side 'echo' service of the conformance suite, a [`ServiceHandler`] plugged into
//! the master: reply = request with every byte inverted (`fixture::echo_reply`), same token; logs
//! the first 4 bytes of each request; every [`Fault`] knob; its bulk side receives what the ARM
//! transmits and sends it back on the ARM's next receive, byte-exact.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fwipc_transport_api::fixture::{echo_reply_byte, DoubleFetch, Fault, TagLog};
use zerocopy::IntoBytes;

use crate::engine::service::{BulkDir, BulkMode, Deliver, Event, ServiceHandle};
use crate::engine::vchiq::{ServiceCtx, ServiceHandler, Vchiq};
use crate::sim::rewrite::rewrite_last_message;
use crate::wire::consts::make_fourcc;
use crate::wire::frame::{self, FrameHeader, NOTIFY};
use crate::VchiqError;

/// The echo service's fourcc.
pub const ECHO_FOURCC: u32 = make_fourcc(*b"echo");

struct EchoState {
    fault: Fault,
    held: Vec<(ServiceHandle, Vec<u8>)>,
    seen: TagLog,
    stash: VecDeque<Vec<u8>>,
    waiting_tx: VecDeque<usize>,
    open: Option<ServiceHandle>,
    listener: Option<ServiceHandle>,
    notify_seq: u32,
    bulk_tag: u64,
    /// The reply being built (reused).
    reply_buf: Vec<u8>,
    /// One-way frames (token with [`NOTIFY`]) from the ARM side: logged, not answered.
    one_way: VecDeque<Vec<u8>>,
    /// The armed double-fetch fault: replies still to rewrite after publishing them.
    rewrite: Option<DoubleFetch>,
    /// Buffers of bulk transmits that completed, reused for the next bulk receives (at most
    /// [`SPARE_BULK_BUFS`], capacity reserved up front): no allocation per bulk.
    spare: Vec<Vec<u8>>,
}

/// Bulk buffers the echo service keeps for reuse.
const SPARE_BULK_BUFS: usize = 4;

impl EchoState {
    /// Keep `buf` for a later bulk receive (dropped if enough are kept already).
    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BULK_BUFS {
            self.spare.push(buf);
        }
    }

    /// The double-fetch fault: if armed, rewrite the reply of `size` bytes just published
    /// (`rewrite_last_message`) and count it off.
    fn rewrite_published(&mut self, master: &Vchiq, size: usize) {
        let Some(df) = self.rewrite.as_mut() else {
            return;
        };
        rewrite_last_message(master, df, size);
        df.count -= 1;
        if df.count == 0 {
            self.rewrite = None;
        }
    }
}

/// The echo service.
pub struct EchoService {
    /// A `spin` lock, held for one request's bookkeeping (a `std` mutex costs one more
    /// read-modify-write per request: its release is a swap).
    st: spin::Mutex<EchoState>,
    /// Written only with `st` held.
    received: AtomicU64,
}

impl Default for EchoService {
    fn default() -> Self {
        Self::new()
    }
}

/// A whole frame: the header with `token` and `len` (as the wire says it, whatever `body`'s
/// length), then `body`.
pub fn encode_frame(token: u32, len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + body.len());
    v.extend_from_slice(FrameHeader::new(token, len).as_bytes());
    v.extend_from_slice(body);
    v
}

impl EchoService {
    /// A behaving echo service.
    pub fn new() -> Self {
        EchoService {
            st: spin::Mutex::new(EchoState {
                fault: Fault::None,
                held: Vec::new(),
                seen: TagLog::new(),
                stash: VecDeque::new(),
                waiting_tx: VecDeque::new(),
                open: None,
                listener: None,
                notify_seq: 0,
                bulk_tag: 0,
                reply_buf: Vec::new(),
                one_way: VecDeque::new(),
                rewrite: None,
                spare: Vec::with_capacity(SPARE_BULK_BUFS),
            }),
            received: AtomicU64::new(0),
        }
    }

    /// Register a new echo service on `master` (the VideoCore side); remembers its handle so the
    /// fault knobs can reach the connection even before its OPENED callback ran.
    pub fn add_to(
        master: &Vchiq,
        params: crate::ServiceParams,
    ) -> crate::Result<(std::sync::Arc<Self>, ServiceHandle)> {
        let e = std::sync::Arc::new(Self::new());
        let h = master.add_service_arc(params, e.clone())?;
        e.lock().listener = Some(h);
        Ok((e, h))
    }

    fn conn(&self) -> Option<ServiceHandle> {
        let s = self.lock();
        s.open.or(s.listener)
    }

    fn lock(&self) -> spin::MutexGuard<'_, EchoState> {
        self.st.lock()
    }

    /// Set the fault for requests from now on.
    pub fn set_fault(&self, f: Fault) {
        self.lock().fault = f;
    }

    /// Send every held reply now.
    pub fn release(&self, master: &Vchiq) {
        let held: Vec<_> = std::mem::take(&mut self.lock().held);
        for (h, m) in held {
            if send_retrying(master, h, &m) {
                self.lock().rewrite_published(master, m.len());
            }
        }
    }

    /// Logged request tags (cleared).
    pub fn take_seen_tags(&self) -> Vec<u32> {
        self.lock().seen.take()
    }

    /// Requests received.
    pub fn received(&self) -> u64 {
        // Relaxed: statistics.
        self.received.load(Ordering::Relaxed)
    }

    /// Lose all state; close the client's connection.
    pub fn reset(&self, master: &Vchiq) {
        let open = {
            let mut s = self.lock();
            s.held.clear();
            s.rewrite = None;
            s.stash.clear();
            s.waiting_tx.clear();
            s.open.or(s.listener)
        };
        if let Some(h) = open {
            // Bounded: a close that still finds no slot after 1 s is given up.
            let _ = master.wait_until(Duration::from_secs(1), || match master.close_service(h) {
                Err(VchiqError::Retry) => None,
                _ => Some(Ok(())),
            });
        }
    }

    /// Send an unsolicited message.
    pub fn notify(&self, master: &Vchiq, payload: &[u8]) -> bool {
        let (h, seq) = {
            let mut s = self.lock();
            s.notify_seq = s.notify_seq.wrapping_add(1) & !NOTIFY;
            (s.open.or(s.listener), s.notify_seq)
        };
        let Some(h) = h else { return false };
        send_retrying(
            master,
            h,
            &encode_frame(NOTIFY | seq, payload.len() as u32, payload),
        )
    }

    /// The one-way frames received from the ARM side so far, oldest first; cleared by reading.
    pub fn take_one_way(&self) -> Vec<Vec<u8>> {
        self.lock().one_way.drain(..).collect()
    }

    /// Send `payload` one-way (a [`NOTIFY`] frame) without waiting for room: `Retry` while the
    /// ARM side is not taking messages.
    pub fn send_one_way(&self, master: &Vchiq, payload: &[u8]) -> crate::Result {
        let (h, seq) = {
            let mut s = self.lock();
            s.notify_seq = s.notify_seq.wrapping_add(1) & !NOTIFY;
            (s.open.or(s.listener), s.notify_seq)
        };
        let h = h.ok_or(VchiqError::NotConnected)?;
        let hdr = FrameHeader::new(NOTIFY | seq, payload.len() as u32);
        // In parts: no frame is assembled on the heap.
        master.queue_message_parts(h, &[hdr.as_bytes(), payload])
    }

    /// Hostile input: `bytes` verbatim as a raw slot message, and as a DATA payload. Bytes that
    /// carry a [`DoubleFetch`] order arm the double-fetch fault instead: the next replies are
    /// rewritten in their slot right after they are published (`rewrite_last_message`).
    pub fn inject_garbage(&self, master: &Vchiq, bytes: &[u8]) {
        if let Some(df) = DoubleFetch::parse(bytes) {
            self.lock().rewrite = Some(df);
            return;
        }
        let _ = master.queue_raw(&bytes[..bytes.len().min(4096)]);
        if let Some(h) = self.conn() {
            let _ = master.queue_message(h, &bytes[..bytes.len().min(4088)]);
        }
    }
}

/// Queue on the master, retrying on back-pressure (bounded: 2 s).
fn send_retrying(master: &Vchiq, h: ServiceHandle, m: &[u8]) -> bool {
    master
        .queue_message_wait(h, m, Duration::from_secs(2))
        .is_ok()
}

impl ServiceHandler for EchoService {
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver {
        let v = ctx.vchiq;
        match event {
            Event::Opened => self.lock().open = Some(ctx.handle),
            Event::Closed => {
                let mut s = self.lock();
                if s.open == Some(ctx.handle) {
                    s.open = None;
                }
                s.held.clear();
            }
            Event::Message(m) => {
                // The request's header through the same parser the ARM side runs (`frame::split`);
                // the body is echoed as it came, whatever the header claims.
                let Ok((h, body)) = frame::split(m.payload()) else {
                    return Deliver::Done;
                };
                let mut s = self.lock();
                if h.token & NOTIFY != 0 {
                    if let Ok(body) = frame::payload(&h, body) {
                        s.one_way.push_back(body.to_vec());
                    }
                    return Deliver::Done;
                }
                let fault = s.fault;
                let (token, len) = match fault {
                    Fault::WrongToken => (h.token.get() ^ 0x5A5A, h.len.get()),
                    Fault::CorruptLength => (h.token.get(), h.len.get().wrapping_add(1000)),
                    _ => (h.token.get(), h.len.get()),
                };
                // The reply is built in the service's own buffer, reused from message to message:
                // the steady-state echo allocates nothing (and clears nothing it then overwrites).
                let mut buf = std::mem::take(&mut s.reply_buf);
                buf.clear();
                buf.extend_from_slice(FrameHeader::new(token, len).as_bytes());
                buf.extend(body.iter().map(|&b| echo_reply_byte(b)));
                let reply: &[u8] = &buf;
                let r = match fault {
                    Fault::None | Fault::WrongToken | Fault::CorruptLength => {
                        v.queue_message(ctx.handle, reply)
                    }
                    Fault::Duplicate => v.queue_message(ctx.handle, reply).map(|()| {
                        let _ = v.queue_message(ctx.handle, reply);
                    }),
                    Fault::CorruptHeader => {
                        // An unknown message type (0xEE) through the real slot path.
                        let mut raw = ((0xEEu32 << 24) | 0x001).to_le_bytes().to_vec();
                        raw.extend_from_slice(&(reply.len() as u32).to_le_bytes());
                        raw.extend_from_slice(reply);
                        v.queue_raw(&raw)
                    }
                    Fault::Hold => {
                        s.held.push((ctx.handle, reply.to_vec()));
                        Ok(())
                    }
                    Fault::Drop => Ok(()),
                    Fault::Delay(d) => {
                        drop(s);
                        std::thread::sleep(d);
                        s = self.lock();
                        v.queue_message(ctx.handle, reply)
                    }
                };
                let rewrite = matches!(
                    fault,
                    Fault::None
                        | Fault::WrongToken
                        | Fault::CorruptLength
                        | Fault::Duplicate
                        | Fault::Delay(_)
                );
                if rewrite && r.is_ok() {
                    s.rewrite_published(v, buf.len());
                }
                s.reply_buf = buf;
                if r == Err(VchiqError::Retry) {
                    // No slot for the reply: redeliver on the next event (nothing logged yet).
                    return Deliver::Retry;
                }
                s.seen.log(body);
                // Relaxed: statistics; a load and a store, the writers being serialized by the
                // state lock `s` holds.
                self.received
                    .store(self.received.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            // Replies refused with `Retry` are redelivered messages (`Deliver::Retry`).
            Event::TxSpace => {}
            Event::RemoteBulkPending { dir, size } => {
                let mut s = self.lock();
                s.bulk_tag += 1;
                let tag = s.bulk_tag;
                match dir {
                    // The ARM transmits: receive it.
                    BulkDir::Receive => {
                        // A spare buffer as it is (the transfer overwrites all `size` bytes, and
                        // only a complete one is echoed): no zeroing, no allocation once warm.
                        let mut buf = s.spare.pop().unwrap_or_default();
                        buf.resize(size, 0);
                        if let Err((_, buf)) =
                            v.bulk_receive(ctx.handle, buf, 0, size, tag, BulkMode::Callback)
                        {
                            s.recycle(buf);
                        }
                    }
                    // The ARM receives: send back what we got, or wait for it.
                    BulkDir::Transmit => match s.stash.pop_front() {
                        Some(d) => {
                            let n = d.len();
                            let _ = v.bulk_transmit(ctx.handle, d, 0, n, tag, BulkMode::Callback);
                        }
                        None => s.waiting_tx.push_back(size),
                    },
                }
            }
            Event::Bulk(c) => {
                if let (BulkDir::Receive, Ok(n)) = (c.dir, c.result) {
                    let mut d = c.buf;
                    d.truncate(n);
                    let mut s = self.lock();
                    if s.waiting_tx.pop_front().is_some() {
                        s.bulk_tag += 1;
                        let tag = s.bulk_tag;
                        let n = d.len();
                        let _ = v.bulk_transmit(ctx.handle, d, 0, n, tag, BulkMode::Callback);
                    } else {
                        s.stash.push_back(d);
                    }
                } else {
                    // A transmit that ended (or a receive that failed): its buffer is free.
                    self.lock().recycle(c.buf);
                }
            }
        }
        Deliver::Done
    }
}
