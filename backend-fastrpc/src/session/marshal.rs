//! Marshalling a call into its payload buffer (the layout of docs/protocols/fastrpc.md §5: the
//! metadata built in a private shadow and copied into DSP-shared memory, then the in-buffers
//! copied straight from the caller; nothing else is written) and reading out-buffers
//! back (a DSP-written length above what was asked fails the call: the length is never trusted).

use zerocopy::IntoBytes;

use fwipc_transport_api::{Counters, ProtocolError};

use crate::channel::context::{Ctx, CtxState, OutRec};
use crate::error::{FastRpcError, Result};
use crate::mem::{read_at, write_at, DmaRegion, SharedBuf};
use crate::session::arg::Arg;
use crate::session::{InvokeTicket, Session};
use crate::wire::layout::{BufDesc, BufSource, HandleDesc, Olap, NOT_INLINE};
use crate::wire::layout_cache::Laid;
use crate::wire::scalars::Scalars;
use crate::wire::{CtxId, FastRpcMsg, MetaOffsets, RemoteBuf};

/// One call as [`Session::start`] checked it, what [`Session::build_and_send`] marshals.
#[derive(Clone, Copy)]
pub(super) struct Call<'c, 'a> {
    /// Remote handle.
    pub handle: u32,
    /// Scalars (method and argument counts, from `args`).
    pub sc: Scalars,
    /// The arguments.
    pub args: &'c [Arg<'a>],
    /// Calling thread id.
    pub tid: i32,
    /// A call of the kernel's own (process control on the init handle): client id 0.
    pub kernel: bool,
}

impl Session {
    /// Marshal `call` into a payload buffer of the reserved context `t` and queue its message.
    pub(super) fn build_and_send(&self, t: &InvokeTicket, call: Call<'_, '_>) -> Result<()> {
        let s = &*self.inner;
        let ch = &*s.ch;
        // Built under the context's lock; it is in flight (the DSP's reference taken) when
        // `send` returns `Ok`, before the message can reach the DSP.
        let msg = ch.ctx.send(t, |c| self.build(c, t, call))?;
        // No fence here: `PacketChannel::send` is itself a release of every payload write
        // sequenced before it (its documented contract; rpmsg's virtqueue publication on
        // hardware, the link mutex in the simulator). A `fence(Release)` would pair with
        // nothing: the DSP reads no atomic of ours that this fence could order.
        if let Err(e) = ch.link.send(msg.as_bytes()) {
            ch.ctx.fail_sent(t, e);
            return Err(e);
        }
        // A DSP loss that swept the table between our `up` check and the queueing above would
        // have missed this context: fail it ourselves. Correct because it went in flight under
        // the slot lock the sweep also takes (`crate::channel::liveness`, model-checked there).
        ch.up.recheck_after_queue(&ch.ctx, t);
        Ok(())
    }

    /// Marshal `call` into a payload buffer and the context `c`; returns the message.
    fn build(&self, c: &mut Ctx, t: &InvokeTicket, call: Call<'_, '_>) -> Result<FastRpcMsg> {
        let Call {
            handle,
            sc,
            args,
            tid,
            kernel,
        } = call;
        let s = &*self.inner;
        let mut lease = s.payloads.take().ok_or(FastRpcError::Busy)?;
        c.maps.clear();
        c.bufs.clear();
        c.handles.clear();
        c.outs.clear();
        let sid_bits = u64::from(s.sid) << 32;
        for (i, a) in args.iter().enumerate() {
            let shared_ok = |buf: &SharedBuf, off: usize, len: usize| {
                buf.sid() == s.sid && off.checked_add(len).is_some_and(|e| e <= buf.len())
            };
            match a {
                Arg::In(d) => c.bufs.push(BufDesc {
                    ptr: d.as_ptr() as u64,
                    len: d.len() as u64,
                    src: BufSource::Copy,
                }),
                Arg::Out(d) => {
                    c.bufs.push(BufDesc {
                        ptr: d.as_ptr() as u64,
                        len: d.len() as u64,
                        src: BufSource::Copy,
                    });
                    c.outs.push(OutRec {
                        slot: i as u16,
                        off: 0,
                        len: d.len() as u64,
                    });
                }
                Arg::OutLen { addr, len } => {
                    c.bufs.push(BufDesc {
                        ptr: *addr,
                        len: *len as u64,
                        src: BufSource::Copy,
                    });
                    c.outs.push(OutRec {
                        slot: i as u16,
                        off: 0,
                        len: *len as u64,
                    });
                }
                Arg::InShared { buf, offset, len } | Arg::OutShared { buf, offset, len } => {
                    if !shared_ok(buf, *offset, *len) {
                        return Err(FastRpcError::InvalidArgument);
                    }
                    c.bufs.push(BufDesc {
                        ptr: buf.va() + *offset as u64,
                        len: *len as u64,
                        src: BufSource::Mapped {
                            bus: buf.bus_addr(),
                            va_start: buf.va(),
                            size: buf.len() as u64,
                        },
                    });
                    c.maps.push((*buf).clone());
                    if matches!(a, Arg::OutShared { .. }) {
                        c.outs.push(OutRec {
                            slot: i as u16,
                            off: NOT_INLINE,
                            len: *len as u64,
                        });
                    }
                }
                Arg::InHandle { buf, offset, len } | Arg::OutHandle { buf, offset, len } => {
                    if !shared_ok(buf, *offset as usize, *len as usize) {
                        return Err(FastRpcError::InvalidArgument);
                    }
                    c.handles.push(HandleDesc {
                        fd: buf.fd(),
                        offset: *offset,
                        len: *len,
                        map: Some((buf.bus_addr(), buf.len() as u64)),
                    });
                    c.maps.push((*buf).clone());
                }
            }
        }
        let nb = c.bufs.len();
        // Within the capacity reserved at setup (`max_args`): no allocation.
        c.olaps.resize(nb, Olap::default());
        c.inline_off.resize(nb, 0);
        let (region, shadow) = lease.parts().ok_or(FastRpcError::InvalidArgument)?;
        let (va, bus) = (region.va(), region.iova() | sid_bits);
        // The metadata is built in the lease's private shadow (no slice of DSP-shared memory
        // may exist, see `crate::mem`). Only what the DSP reads is written to the region: the
        // whole metadata (zeroed fd and CRC lists included, docs/protocols/fastrpc.md §12.9)
        // and each in-buffer's inline copy, straight from the caller's bytes. Padding and
        // out-buffer space are left as they are (docs/protocols/fastrpc.md §12.9, "What the AP
        // writes").
        // A call of the same shape as the last one on this payload buffer reuses the layout its
        // shadow holds (`crate::wire::layout_cache`), and when that call was finished, only the
        // words the DSP may have written since are written again (§12.9, "What a repeated call
        // rewrites").
        let current = core::mem::take(&mut shadow.region_current);
        let placed = {
            let cx = &mut *c;
            let placed = shadow.layout.layout(
                sc,
                &cx.bufs,
                &cx.handles,
                &mut cx.olaps,
                &mut shadow.bytes,
                va,
                bus,
                &mut cx.inline_off,
            );
            if let Ok((p, laid)) = &placed {
                match *laid {
                    Laid::Kept { fd_words } if current => {
                        refresh_dsp_words(&**region, &shadow.bytes, sc, fd_words)?
                    }
                    // `layout` checked `metalen <= pkt_size <= shadow.len() == region.len()`.
                    _ => write_at(&**region, 0, &shadow.bytes[..p.metalen])?,
                }
                for (i, a) in args.iter().enumerate() {
                    if let Arg::In(d) = a {
                        let o = cx.inline_off[i];
                        if o != NOT_INLINE {
                            let o = usize::try_from(o).map_err(|_| FastRpcError::TooLarge)?;
                            write_at(&**region, o, d)?;
                        }
                    }
                }
            }
            placed.map(|(p, _)| p)
        };
        let placed = placed?;
        for k in 0..c.outs.len() {
            let i = c.outs[k].slot as usize;
            if c.outs[k].off != NOT_INLINE {
                c.outs[k].off = c.inline_off[i];
            }
        }
        let pd = self.pd();
        let id = CtxId::new((t.idx + 1) as u8, t.generation, pd);
        let msg = FastRpcMsg {
            pid: if kernel { 0 } else { self.client_id() }.into(),
            tid: tid.into(),
            ctx: id.0.into(),
            handle: handle.into(),
            sc: sc.0.into(),
            addr: if sc.is_empty() { 0 } else { bus }.into(),
            size: if sc.is_empty() { 0 } else { placed.msg_size }.into(),
        };
        c.sc = sc;
        c.handle = handle;
        c.tid = tid;
        c.pd = pd;
        c.payload = Some(lease);
        Ok(msg)
    }

    /// Copy out-buffer `k` (0-based among out-buffers) of a finished call into `dst`; returns
    /// its length as the DSP wrote it back, which may be shorter than asked
    /// (docs/protocols/fastrpc.md §5). A length above what was asked is a protocol error
    /// (`Protocol(BadLength)`, counted in `protocol_errors`): nothing is copied and the call
    /// ends as any other failed reply does. `TooLarge` if `dst` is shorter. For a shared
    /// out-buffer nothing is copied (the data is in the buffer; `dst` may be empty).
    pub fn read_out(&self, t: &InvokeTicket, k: usize, dst: &mut [u8]) -> Result<usize> {
        self.with_ctx(t, |state, c| {
            if !matches!(state, CtxState::Done(_)) {
                return Err(FastRpcError::InvalidArgument);
            }
            self.read_out_of(c, k, dst)
        })
    }

    /// [`Session::status`], then on success [`Session::read_out`] of out-buffer `k`, under one
    /// look at the context (a transport's `fetch_response`).
    pub(crate) fn status_and_read_out(
        &self,
        t: &InvokeTicket,
        k: usize,
        dst: &mut [u8],
    ) -> Result<usize> {
        self.with_ctx(t, |state, c| {
            Self::status_of(state)?;
            self.read_out_of(c, k, dst)
        })
    }

    /// [`Session::read_out`] on the finished context `c` (its lock held).
    fn read_out_of(&self, c: &mut Ctx, k: usize, dst: &mut [u8]) -> Result<usize> {
        let ch = &self.inner.ch;
        let rec = *c.outs.get(k).ok_or(FastRpcError::InvalidArgument)?;
        let sc = c.sc;
        let lease = c.payload.as_ref().ok_or(FastRpcError::InvalidArgument)?;
        // No fence: the DSP's payload writes are ordered before its response by the
        // `PacketChannel` contract (receipt is an acquire of everything the DSP wrote
        // before sending), and we observed the response under this context's lock.
        let region = lease.region();
        // Read the one word the DSP reports, `rpra[slot].len`, into a private copy, once,
        // then check it: the DSP may still be writing the region if it is misbehaving.
        let slot = usize::from(rec.slot);
        if slot >= sc.len() {
            return Err(ProtocolError::OutOfRange.into());
        }
        let mut rb = RemoteBuf::default();
        read_at(
            &**region,
            MetaOffsets::new(sc.len()).rpra + 16 * slot,
            rb.as_mut_bytes(),
        )?;
        let dsp_len = rb.len.get();
        if dsp_len > rec.len {
            // A reply longer than its buffer cannot be correct: fail it rather than hand
            // the caller a full-size reply made of whatever the buffer held.
            Counters::bump(&ch.counters().protocol_errors);
            return Err(ProtocolError::BadLength.into());
        }
        // `dsp_len <= rec.len`, the length of a caller buffer: fits `usize`.
        let n = usize::try_from(dsp_len).map_err(|_| ProtocolError::BadLength)?;
        if rec.off != NOT_INLINE {
            let dst = dst.get_mut(..n).ok_or(FastRpcError::TooLarge)?;
            let o = usize::try_from(rec.off).map_err(|_| ProtocolError::OutOfRange)?;
            read_at(&**region, o, dst).map_err(|_| ProtocolError::OutOfRange)?;
        }
        Ok(n)
    }
}

/// Bring a region whose metadata was `image`'s after the last finished call on it (a kept
/// layout, [`Laid::Kept`]) up to date: rewrite the words a DSP writes during a call, and only
/// those (docs/protocols/fastrpc.md §12.9, "What a repeated call rewrites"): each out-buffer's
/// `rpra[i].len` (the DSP writes back the length it produced) and the first `fd_words` words of
/// the fd list (the words the DSP's list reached, zero again in `image`). Every other word of
/// the metadata is what the last call wrote and the DSP only reads.
fn refresh_dsp_words(
    region: &dyn DmaRegion,
    image: &[u8],
    sc: Scalars,
    fd_words: usize,
) -> Result<()> {
    let m = MetaOffsets::new(sc.len());
    for i in sc.inbufs()..sc.nbufs() {
        let at = m.rpra + 16 * i + 8;
        let word = image.get(at..at + 8).ok_or(FastRpcError::InvalidArgument)?;
        write_at(region, at, word)?;
    }
    if fd_words == 0 {
        return Ok(());
    }
    let end = m.fdlist + 8 * fd_words;
    let fds = image
        .get(m.fdlist..end.min(m.crclist))
        .ok_or(FastRpcError::InvalidArgument)?;
    write_at(region, m.fdlist, fds)
}

#[cfg(all(test, feature = "sim"))]
mod tests;
