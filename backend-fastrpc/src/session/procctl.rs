//! Remote process control on the init handle (docs/protocols/fastrpc.md §7): attach, create (init
//! file + init memory), create-static (INIT_STATIC, the v6 TODO), release, remote mmap/munmap and
//! mem map/unmap (the v6 TODO). Table-driven: each call's scalars come from [`rmid::scalars`].
//!
//! Memory handed to the DSP (init memory, remote heap, mmap'd pages, mem-mapped buffers) is kept by
//! the session until the DSP *confirms* the unmap (docs/protocols/fastrpc.md §12.9); a failed unmap
//! keeps it.
//!
//! That memory reaches the DSP only as a page descriptor inside the argument bytes, so the invoke
//! context does not reference it (it keeps only buffers passed as buffers, `crate::mem`). When such
//! a call times out, the DSP may still be working on it, and may yet answer *success* and keep
//! using the memory (a late CREATE leaves a process running in the init memory). So on `Timeout`
//! the memory is not dropped but *quarantined* in the session: it is freed only when the DSP
//! confirms INIT_RELEASE (the process and everything mapped into it are gone) or when the session
//! is torn down (`SessionInner`'s drop, after which the DSP may no longer touch the bank). A
//! control call's future (`*_async`) dropped before the DSP answered quarantines it the same way.
//!
//! Each call is written once, as an `async fn` over the way it waits: the blocking form waits
//! inside its one poll as the session's `CallWait` says; the `*_async` form is an
//! [`InvokeFuture`] underneath (woken by the DSP's answer, deadline enforced when polled).

use core::future::Future;

use fwipc_transport_api::block_on_polling;
use zerocopy::IntoBytes;

use crate::error::{FastRpcError, Result};
use crate::mem::SharedBuf;
use crate::session::arg::{scalars_for, Arg, PD_ROOT, PD_SENSORS, PD_USER};
use crate::session::proc_state::{MemMapEntry, MmapEntry, PdKind, ProcState, Quarantined};
use crate::session::{InvokeFuture, Session};
use crate::wire::align_up;
use crate::wire::{
    rmid, CreateReq, CreateStaticReq, MemMapReq, MemUnmapReq, MmapReq, MunmapReq, PhyPage,
    INIT_FILELEN_MAX, INIT_HANDLE, PD_NAME_MAX,
};

/// Process attribute `FASTRPC_MODE_UNSIGNED_MODULE`.
pub const ATTR_UNSIGNED_MODULE: u32 = 1 << 3;
/// Process attribute DEBUG.
pub const ATTR_DEBUG: u32 = 1 << 0;

fn page_of(bus: u64, size: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(
        PhyPage {
            addr: bus.into(),
            size: size.into(),
        }
        .as_bytes(),
    );
    b
}

/// How a control call waits: blocking as the session's [`CallWait`](crate::CallWait) says, or as
/// a future ([`InvokeFuture`]). Every control call is written once, as an `async fn` taking this;
/// the blocking form runs it to completion in its first poll.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Block,
    Async,
}

/// Drive a control call written as an `async fn` in [`How::Block`] mode: it never waits on a
/// waker, so it is done after one poll (the loop is `block_on_polling`'s, never taken twice).
fn blocking<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    block_on_polling(f)
}

/// Memory a control call gave the DSP only as a page descriptor: kept in the session's
/// quarantine if the call times out, or if its future is dropped before the DSP answered (the DSP
/// may still be using it either way). [`Keep::settle`] ends the call.
struct Keep<'s, F: FnOnce() -> Quarantined> {
    session: &'s Session,
    keep: Option<F>,
}

impl<'s, F: FnOnce() -> Quarantined> Keep<'s, F> {
    fn new(session: &'s Session, keep: F) -> Self {
        Keep {
            session,
            keep: Some(keep),
        }
    }

    /// The call ended with `r`: quarantine on `Timeout`, else let the memory go as usual.
    fn settle(mut self, r: &Result<()>) {
        let keep = self.keep.take();
        if *r == Err(FastRpcError::Timeout) {
            if let Some(k) = keep {
                self.session.quarantine(k());
            }
        }
    }
}

impl<F: FnOnce() -> Quarantined> Drop for Keep<'_, F> {
    fn drop(&mut self) {
        // Not settled: the future was dropped while the DSP held the call.
        if let Some(k) = self.keep.take() {
            self.session.quarantine(k());
        }
    }
}

impl Session {
    /// Keep memory the DSP was given and may still be using.
    fn quarantine(&self, q: Quarantined) {
        log::warn!("fastrpc: control call timed out or was cancelled: keeping the memory it gave the DSP until the process is released");
        self.inner.proc.lock().quarantine.push(q);
    }

    /// Memory regions kept because a control call that gave them to the DSP timed out or was
    /// cancelled (its future dropped before the DSP answered); freed when the DSP confirms
    /// INIT_RELEASE, or with the session.
    pub fn quarantined(&self) -> usize {
        self.inner.proc.lock().quarantine.len()
    }

    async fn ctl(&self, how: How, id: u32, args: &mut [Arg<'_>]) -> Result<()> {
        // The table is the source of truth for the counts the DSP expects.
        let want = rmid::scalars(id).ok_or(FastRpcError::InvalidArgument)?;
        if scalars_for(id, args)? != want {
            return Err(FastRpcError::InvalidArgument);
        }
        match how {
            How::Block => self.invoke_inner(INIT_HANDLE, id, args, true, None),
            How::Async => {
                let t = self.start_inner(INIT_HANDLE, id, args, 0, true)?;
                InvokeFuture::started(self, t, args).await
            }
        }
    }

    /// The process kind, if the session has one.
    pub fn pd_kind(&self) -> Option<PdKind> {
        self.inner.proc.lock().kind
    }

    async fn attach_as(&self, how: How, pd: u8, kind: PdKind) -> Result<()> {
        if self.inner.proc.lock().kind.is_some() {
            return Err(FastRpcError::InvalidArgument);
        }
        self.set_pd(pd);
        let pid = self.client_id().to_le_bytes();
        let r = self.ctl(how, rmid::ATTACH, &mut [Arg::In(&pid)]).await;
        match r {
            Ok(()) => self.inner.proc.lock().kind = Some(kind),
            Err(_) => self.set_pd(PD_USER),
        }
        r
    }

    /// INIT_ATTACH to the root PD (PD bits 0).
    pub fn attach(&self) -> Result<()> {
        blocking(self.attach_as(How::Block, PD_ROOT, PdKind::Root))
    }

    /// [`Session::attach`] as a future (see [`InvokeFuture`] for waking, deadline and drop).
    pub async fn attach_async(&self) -> Result<()> {
        self.attach_as(How::Async, PD_ROOT, PdKind::Root).await
    }

    /// INIT_ATTACH to the sensors PD (PD bits 2).
    pub fn attach_sensors(&self) -> Result<()> {
        blocking(self.attach_as(How::Block, PD_SENSORS, PdKind::Sensors))
    }

    /// [`Session::attach_sensors`] as a future.
    pub async fn attach_sensors_async(&self) -> Result<()> {
        self.attach_as(How::Async, PD_SENSORS, PdKind::Sensors)
            .await
    }

    /// INIT_CREATE (or CREATE_ATTR when `attrs != 0`): a dynamic user PD named `name` from the
    /// shell ELF `file` (≤ 2 MiB), with init memory `ALIGN(max(2 MiB, 4·filelen), 1 MiB)`
    /// allocated on the session's bank and kept until close.
    pub fn create(&self, name: &str, file: &[u8], attrs: u32) -> Result<()> {
        blocking(self.create_in(How::Block, name, file, attrs))
    }

    /// [`Session::create`] as a future. Dropped before the DSP answered, it quarantines the init
    /// memory as a timeout does.
    pub async fn create_async(&self, name: &str, file: &[u8], attrs: u32) -> Result<()> {
        self.create_in(How::Async, name, file, attrs).await
    }

    async fn create_in(&self, how: How, name: &str, file: &[u8], attrs: u32) -> Result<()> {
        if self.inner.proc.lock().kind.is_some()
            || name.len() >= PD_NAME_MAX
            || file.is_empty()
            || file.len() > INIT_FILELEN_MAX
        {
            return Err(FastRpcError::InvalidArgument);
        }
        if self.unsigned_only() && attrs & ATTR_UNSIGNED_MODULE == 0 {
            // The driver's -ECONNREFUSED: a signed PD from the non-secure node.
            return Err(FastRpcError::PermissionDenied);
        }
        let memlen = align_up(INIT_FILELEN_MAX.max(4 * file.len()) as u64, 1 << 20)
            .ok_or(FastRpcError::InvalidArgument)?;
        let mem = self
            .inner
            .ch
            .hal
            .alloc(self.sid(), memlen as usize)
            .ok_or(FastRpcError::NoMemory)?;
        // The ELF goes by buffer (the one CREATE argument the DSP takes as a dma-buf).
        let elf = self.alloc_shared(file.len())?;
        elf.write(0, file)?;
        let mut namebuf = [0u8; PD_NAME_MAX];
        namebuf[..name.len()].copy_from_slice(name.as_bytes());
        let namelen = name.len() + 1;
        let req = CreateReq {
            pgid: self.client_id().into(),
            namelen: (namelen as u32).into(),
            filelen: (file.len() as u32).into(),
            pageslen: 1.into(),
            attrs: attrs.into(),
            siglen: 0.into(),
        };
        let page = page_of(mem.iova() | (u64::from(self.sid()) << 32), memlen);
        let id = if attrs != 0 {
            rmid::CREATE_ATTR
        } else {
            rmid::CREATE
        };
        self.set_pd(PD_USER);
        // `elf` travels as a buffer (the context keeps it); `mem` only as `page`.
        let keep = Keep::new(self, || Quarantined::Region(mem.clone()));
        let r = self
            .ctl(
                how,
                id,
                &mut [
                    Arg::In(req.as_bytes()),
                    Arg::In(&namebuf[..namelen]),
                    Arg::InShared {
                        buf: &elf,
                        offset: 0,
                        len: file.len(),
                    },
                    Arg::In(&page),
                ],
            )
            .await;
        keep.settle(&r);
        r?;
        let mut p = self.inner.proc.lock();
        p.kind = Some(PdKind::User);
        p.init_mem = Some(mem);
        Ok(())
    }

    /// INIT_CREATE_STATIC: a static PD `name` (e.g. `audiopd`) with a remote heap of `memlen`
    /// bytes (the user lib passes 3 MiB for the audio PD). PD bits 0.
    pub fn create_static(&self, name: &str, memlen: usize) -> Result<()> {
        blocking(self.create_static_in(How::Block, name, memlen))
    }

    /// [`Session::create_static`] as a future. Dropped before the DSP answered, it quarantines
    /// the remote heap as a timeout does.
    pub async fn create_static_async(&self, name: &str, memlen: usize) -> Result<()> {
        self.create_static_in(How::Async, name, memlen).await
    }

    async fn create_static_in(&self, how: How, name: &str, memlen: usize) -> Result<()> {
        if self.inner.proc.lock().kind.is_some() || name.is_empty() || name.len() > PD_NAME_MAX {
            return Err(FastRpcError::InvalidArgument);
        }
        let heap = self
            .inner
            .ch
            .hal
            .alloc(self.sid(), memlen)
            .ok_or(FastRpcError::NoMemory)?;
        let req = CreateStaticReq {
            pgid: self.client_id().into(),
            namelen: (name.len() as u32).into(),
            pageslen: 0.into(),
        };
        // The static-PD remote heap is the exception to the `sid << 32` rule
        // (docs/protocols/fastrpc.md §1).
        let page = page_of(heap.iova(), heap.len() as u64);
        self.set_pd(PD_ROOT);
        let keep = Keep::new(self, || Quarantined::Region(heap.clone()));
        let r = self
            .ctl(
                how,
                rmid::CREATE_STATIC,
                &mut [
                    Arg::In(req.as_bytes()),
                    Arg::In(name.as_bytes()),
                    Arg::In(&page),
                ],
            )
            .await;
        keep.settle(&r);
        r?;
        let mut p = self.inner.proc.lock();
        p.kind = Some(PdKind::Static);
        p.heap = Some(heap);
        Ok(())
    }

    /// INIT_RELEASE: tear the DSP process down (sent on every close). The init memory, heap and
    /// maps are released once the DSP confirms.
    pub fn release_process(&self) -> Result<()> {
        blocking(self.release_in(How::Block))
    }

    /// [`Session::release_process`] as a future.
    pub async fn release_process_async(&self) -> Result<()> {
        self.release_in(How::Async).await
    }

    async fn release_in(&self, how: How) -> Result<()> {
        let pid = self.client_id().to_le_bytes();
        self.ctl(how, rmid::RELEASE, &mut [Arg::In(&pid)]).await?;
        let mut p = self.inner.proc.lock();
        *p = ProcState::default();
        drop(p);
        self.set_pd(PD_USER);
        Ok(())
    }

    /// INIT_MMAP: give the DSP `size` bytes of new memory (flags: `ADD_PAGES` user-heap growth
    /// or `REMOTE_HEAP_ADDR`). Returns the DSP virtual address.
    pub fn mmap(&self, flags: u32, size: usize) -> Result<u64> {
        blocking(self.mmap_in(How::Block, flags, size))
    }

    /// [`Session::mmap`] as a future. Dropped before the DSP answered, it quarantines the memory
    /// as a timeout does.
    pub async fn mmap_async(&self, flags: u32, size: usize) -> Result<u64> {
        self.mmap_in(How::Async, flags, size).await
    }

    async fn mmap_in(&self, how: How, flags: u32, size: usize) -> Result<u64> {
        let region = self
            .inner
            .ch
            .hal
            .alloc(self.sid(), size)
            .ok_or(FastRpcError::NoMemory)?;
        let req = MmapReq {
            pgid: self.client_id().into(),
            flags: flags.into(),
            vaddr: 0.into(),
            num: 16.into(),
            pad: [0; 4],
        };
        let page = page_of(
            region.iova() | (u64::from(self.sid()) << 32),
            region.len() as u64,
        );
        let mut out = [0u8; 8];
        let keep = Keep::new(self, || Quarantined::Region(region.clone()));
        let r = self
            .ctl(
                how,
                rmid::MMAP,
                &mut [Arg::In(req.as_bytes()), Arg::In(&page), Arg::Out(&mut out)],
            )
            .await;
        keep.settle(&r);
        r?;
        let vaddr = u64::from_le_bytes(out);
        self.inner.proc.lock().mmaps.push(MmapEntry {
            vaddr,
            size: region.len() as u64,
            _region: region,
        });
        Ok(vaddr)
    }

    /// INIT_MUNMAP of a mapping made by [`Session::mmap`]; the memory is freed only after the
    /// DSP confirms.
    pub fn munmap(&self, vaddr: u64) -> Result<()> {
        blocking(self.munmap_in(How::Block, vaddr))
    }

    /// [`Session::munmap`] as a future.
    pub async fn munmap_async(&self, vaddr: u64) -> Result<()> {
        self.munmap_in(How::Async, vaddr).await
    }

    async fn munmap_in(&self, how: How, vaddr: u64) -> Result<()> {
        let size = {
            let p = self.inner.proc.lock();
            p.mmaps
                .iter()
                .find(|m| m.vaddr == vaddr)
                .map(|m| m.size)
                .ok_or(FastRpcError::InvalidArgument)?
        };
        let req = MunmapReq {
            pgid: self.client_id().into(),
            pad: [0; 4],
            vaddr: vaddr.into(),
            size: size.into(),
        };
        self.ctl(how, rmid::MUNMAP, &mut [Arg::In(req.as_bytes())])
            .await?;
        self.inner.proc.lock().mmaps.retain(|m| m.vaddr != vaddr);
        Ok(())
    }

    /// INIT_MEM_MAP: map `len` bytes of shared buffer `buf` at `offset` into the DSP process.
    /// The buffer stays referenced until [`Session::mem_unmap`] is confirmed.
    pub fn mem_map(&self, buf: &SharedBuf, offset: usize, len: usize, flags: u32) -> Result<u64> {
        blocking(self.mem_map_in(How::Block, buf, offset, len, flags))
    }

    /// [`Session::mem_map`] as a future. Dropped before the DSP answered, it keeps a reference
    /// to the buffer in quarantine as a timeout does.
    pub async fn mem_map_async(
        &self,
        buf: &SharedBuf,
        offset: usize,
        len: usize,
        flags: u32,
    ) -> Result<u64> {
        self.mem_map_in(How::Async, buf, offset, len, flags).await
    }

    async fn mem_map_in(
        &self,
        how: How,
        buf: &SharedBuf,
        offset: usize,
        len: usize,
        flags: u32,
    ) -> Result<u64> {
        if buf.sid() != self.sid() || offset.checked_add(len).is_none_or(|e| e > buf.len()) {
            return Err(FastRpcError::InvalidArgument);
        }
        let req = MemMapReq {
            pgid: self.client_id().into(),
            fd: buf.fd().into(),
            offset: (offset as i32).into(),
            flags: flags.into(),
            vaddrin: 0.into(),
            num: 16.into(),
            data_len: (len as i32).into(),
        };
        let page = page_of(buf.bus_addr(), buf.len() as u64);
        let mut out = [0u8; 8];
        // The buffer reaches the DSP as `page` only: the caller's handle may be dropped right
        // after a timeout.
        let keep = Keep::new(self, || Quarantined::Buf(buf.clone()));
        let r = self
            .ctl(
                how,
                rmid::MEM_MAP,
                &mut [
                    Arg::In(req.as_bytes()),
                    Arg::In(&page),
                    Arg::In(&[]),
                    Arg::Out(&mut out),
                ],
            )
            .await;
        keep.settle(&r);
        r?;
        let vaddr = u64::from_le_bytes(out);
        self.inner.proc.lock().mem_maps.push(MemMapEntry {
            vaddr,
            len: len as u64,
            buf: buf.clone(),
        });
        Ok(vaddr)
    }

    /// INIT_MEM_UNMAP of a [`Session::mem_map`] mapping; the buffer reference is dropped only
    /// after the DSP confirms.
    pub fn mem_unmap(&self, vaddr: u64) -> Result<()> {
        blocking(self.mem_unmap_in(How::Block, vaddr))
    }

    /// [`Session::mem_unmap`] as a future.
    pub async fn mem_unmap_async(&self, vaddr: u64) -> Result<()> {
        self.mem_unmap_in(How::Async, vaddr).await
    }

    async fn mem_unmap_in(&self, how: How, vaddr: u64) -> Result<()> {
        let (fd, len) = {
            let p = self.inner.proc.lock();
            p.mem_maps
                .iter()
                .find(|m| m.vaddr == vaddr)
                .map(|m| (m.buf.fd(), m.len))
                .ok_or(FastRpcError::InvalidArgument)?
        };
        let req = MemUnmapReq {
            pgid: self.client_id().into(),
            fd: fd.into(),
            vaddrin: vaddr.into(),
            len: len.into(),
        };
        self.ctl(how, rmid::MEM_UNMAP, &mut [Arg::In(req.as_bytes())])
            .await?;
        self.inner.proc.lock().mem_maps.retain(|m| m.vaddr != vaddr);
        Ok(())
    }

    /// Close the session the way the driver's release does: INIT_RELEASE (sent on every
    /// close; the process memory is freed once the DSP confirms), then tear the session down.
    pub fn close(self) -> Result<()> {
        let r = self.release_process();
        let s = self.shutdown(self.call_wait().deadline());
        r.and(s)
    }

    /// DSP mappings this session holds (mmap + mem_map).
    pub fn remote_maps(&self) -> usize {
        let p = self.inner.proc.lock();
        p.mmaps.len() + p.mem_maps.len()
    }
}
