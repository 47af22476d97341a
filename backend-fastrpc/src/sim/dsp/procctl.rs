//! The simulated DSP's process-control service (handle 1): attach, create, create-static,
//! release, mmap/munmap and mem map/unmap against a real process table and the simulated SMMU
//! (docs/protocols/fastrpc.md §7).

use crate::error::aee;
use crate::wire::{
    rmid, CreateReq, CreateStaticReq, MemMapReq, MemUnmapReq, MmapReq, MunmapReq, PhyPage,
    INIT_FILELEN_MAX, MMAP_ADD_PAGES, MMAP_REMOTE_HEAP_ADDR, PD_NAME_MAX,
};

use super::{lock, read_struct, CallInfo, ProcKind, Process, Shared, State};

impl Shared {
    pub(super) fn procctl(
        &self,
        call: &CallInfo,
        ctx: u64,
        ins: &[Vec<u8>],
        outs: &mut [Vec<u8>],
    ) -> i32 {
        let bad = aee::dsp(aee::EBADPARM);
        let method = call.sc.method();
        let Some(want) = rmid::scalars(method) else {
            return aee::dsp(aee::EUNSUPPORTED);
        };
        if call.sc != want {
            return bad;
        }
        if call.pid != 0 {
            // Process control comes from the kernel only.
            return aee::dsp(aee::EPRIVLEVEL);
        }
        let page = |b: &Vec<u8>| read_struct::<PhyPage>(b).map(|p| (p.addr.get(), p.size.get()));
        let mut s = lock(&self.state);
        let s = &mut *s;
        let new_vaddr = |s: &mut State, size: u64| {
            let v = s.next_vaddr;
            s.next_vaddr += crate::wire::align_up(size, 4096).unwrap_or(4096);
            v
        };
        match method {
            rmid::ATTACH | rmid::RELEASE => {
                let Some(pid) = ins[0]
                    .get(..4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                else {
                    return bad;
                };
                if method == rmid::ATTACH {
                    if s.procs.contains_key(&pid) {
                        return aee::dsp(aee::EBADSTATE);
                    }
                    s.procs.insert(
                        pid,
                        Process {
                            kind: ProcKind::Attached((ctx & 0xf) as u8),
                            name: String::new(),
                            mem: None,
                            maps: Vec::new(),
                            mem_maps: Vec::new(),
                        },
                    );
                } else {
                    // Sent on every close; releasing nothing is fine.
                    s.procs.remove(&pid);
                }
                0
            }
            rmid::CREATE | rmid::CREATE_ATTR => {
                let Some(req) = read_struct::<CreateReq>(&ins[0]) else {
                    return bad;
                };
                let (pid, namelen, filelen) = (
                    req.pgid.get(),
                    req.namelen.get() as usize,
                    req.filelen.get() as usize,
                );
                if namelen != ins[1].len()
                    || namelen == 0
                    || namelen > PD_NAME_MAX
                    || ins[1][namelen - 1] != 0
                    || filelen != ins[2].len()
                    || filelen == 0
                    || filelen > INIT_FILELEN_MAX
                    || req.pageslen.get() != 1
                    || (method == rmid::CREATE) != (req.attrs.get() == 0)
                {
                    return bad;
                }
                let Some((pa, ps)) = page(&ins[3]) else {
                    return bad;
                };
                let Ok(ps_usize) = usize::try_from(ps) else {
                    return bad;
                };
                if ps < (4 * filelen) as u64 || !self.bus.is_mapped(pa, ps_usize) {
                    return aee::dsp(aee::ENOMEMORY);
                }
                if s.procs.contains_key(&pid) {
                    return aee::dsp(aee::EBADSTATE);
                }
                let name = String::from_utf8_lossy(&ins[1][..namelen - 1]).into_owned();
                s.procs.insert(
                    pid,
                    Process {
                        kind: ProcKind::User,
                        name,
                        mem: Some((pa, ps)),
                        maps: Vec::new(),
                        mem_maps: Vec::new(),
                    },
                );
                0
            }
            rmid::CREATE_STATIC => {
                let Some(req) = read_struct::<CreateStaticReq>(&ins[0]) else {
                    return bad;
                };
                let namelen = req.namelen.get() as usize;
                if namelen != ins[1].len() || namelen == 0 || namelen > PD_NAME_MAX {
                    return bad;
                }
                let Some((pa, ps)) = page(&ins[2]) else {
                    return bad;
                };
                if ps == 0 {
                    return aee::dsp(aee::ENOMEMORY);
                }
                let pid = req.pgid.get();
                if s.procs.contains_key(&pid) {
                    return aee::dsp(aee::EBADSTATE);
                }
                s.procs.insert(
                    pid,
                    Process {
                        kind: ProcKind::Static,
                        name: String::from_utf8_lossy(&ins[1]).into_owned(),
                        mem: Some((pa, ps)),
                        maps: Vec::new(),
                        mem_maps: Vec::new(),
                    },
                );
                0
            }
            rmid::MMAP => {
                let (Some(req), Some((pa, ps))) = (read_struct::<MmapReq>(&ins[0]), page(&ins[1]))
                else {
                    return bad;
                };
                let flags = req.flags.get();
                if (flags != MMAP_ADD_PAGES && flags != MMAP_REMOTE_HEAP_ADDR)
                    || req.num.get() != 16
                    || outs[0].len() != 8
                {
                    return bad;
                }
                if !usize::try_from(ps).is_ok_and(|ps| ps > 0 && self.bus.is_mapped(pa, ps)) {
                    return bad;
                }
                if !s.procs.contains_key(&req.pgid.get()) {
                    return aee::dsp(aee::EBADSTATE);
                }
                let v = new_vaddr(s, ps);
                if let Some(p) = s.procs.get_mut(&req.pgid.get()) {
                    p.maps.push((v, ps, pa));
                }
                outs[0].copy_from_slice(&v.to_le_bytes());
                0
            }
            rmid::MUNMAP => {
                let Some(req) = read_struct::<MunmapReq>(&ins[0]) else {
                    return bad;
                };
                let Some(p) = s.procs.get_mut(&req.pgid.get()) else {
                    return aee::dsp(aee::EBADSTATE);
                };
                let key = (req.vaddr.get(), req.size.get());
                match p.maps.iter().position(|m| (m.0, m.1) == key) {
                    Some(i) => {
                        p.maps.remove(i);
                        0
                    }
                    None => aee::dsp(aee::ENOSUCHMAP),
                }
            }
            rmid::MEM_MAP => {
                let (Some(req), Some((pa, ps))) =
                    (read_struct::<MemMapReq>(&ins[0]), page(&ins[1]))
                else {
                    return bad;
                };
                let len = req.data_len.get();
                let off = req.offset.get();
                if !ins[2].is_empty()
                    || outs[0].len() != 8
                    || len <= 0
                    || off < 0
                    || (off as u64 + len as u64) > ps
                    || !usize::try_from(ps).is_ok_and(|ps| self.bus.is_mapped(pa, ps))
                {
                    return bad;
                }
                if !s.procs.contains_key(&req.pgid.get()) {
                    return aee::dsp(aee::EBADSTATE);
                }
                let v = new_vaddr(s, len as u64);
                if let Some(p) = s.procs.get_mut(&req.pgid.get()) {
                    p.mem_maps.push((v, req.fd.get(), len as u64));
                }
                outs[0].copy_from_slice(&v.to_le_bytes());
                0
            }
            rmid::MEM_UNMAP => {
                let Some(req) = read_struct::<MemUnmapReq>(&ins[0]) else {
                    return bad;
                };
                let Some(p) = s.procs.get_mut(&req.pgid.get()) else {
                    return aee::dsp(aee::EBADSTATE);
                };
                let key = (req.vaddrin.get(), req.fd.get(), req.len.get());
                match p.mem_maps.iter().position(|m| *m == key) {
                    Some(i) => {
                        p.mem_maps.remove(i);
                        0
                    }
                    None => aee::dsp(aee::ENOSUCHMAP),
                }
            }
            _ => aee::dsp(aee::EUNSUPPORTED),
        }
    }
}
