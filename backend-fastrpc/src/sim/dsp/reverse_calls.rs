//! Reverse RPC on the simulated DSP: a hosted object's call that needs the AP is parked, its
//! request queued for the AP's listener (`adsp_listener.next2` calls parked here), and the
//! listener's reply resumes the parked call (docs/protocols/fastrpc.md §10).

use fwipc_transport_api::fixture::Fault;

use crate::error::aee;
use crate::reverse;
use crate::wire::scalars::Scalars;
use crate::wire::FastRpcMsg;

use super::{lock, Decoded, ReverseCall, Shared};

impl Shared {
    pub(super) fn start_reverse(
        &self,
        msg: &FastRpcMsg,
        d: Decoded,
        rc: ReverseCall,
    ) -> Option<i32> {
        let ins: Vec<&[u8]> = rc.ins.iter().map(|b| &b[..]).collect();
        let size = rc.ins.iter().map(|b| b.len() + 16).sum::<usize>() + 4 * rc.out_lens.len();
        let mut packed = vec![0u8; size];
        let Ok(n) = reverse::pack(&ins, &rc.out_lens, &mut packed) else {
            self.write_back(&self.payload(msg), msg, &d, aee::dsp(aee::EFAILED));
            return Some(aee::dsp(aee::EFAILED));
        };
        packed.truncate(n);
        let sc = Scalars::makex(
            0,
            rc.method,
            ins.len() as u32,
            rc.out_lens.len() as u32,
            0,
            0,
        );
        {
            let mut s = lock(&self.state);
            let rctx = s.next_rctx;
            s.next_rctx = s.next_rctx.wrapping_add(1).max(1);
            s.parked.insert(rctx, (*msg, d, rc.out_lens.len()));
            s.rev_queue.push_back((rctx, rc.handle, sc.0, packed));
        }
        self.pump_listeners();
        None
    }

    /// Hand queued reverse requests to waiting listeners.
    fn pump_listeners(&self) {
        loop {
            let (lmsg, mut ld, (rctx, handle, sc, packed)) = {
                let mut s = lock(&self.state);
                if s.listeners.is_empty() || s.rev_queue.is_empty() {
                    return;
                }
                let (Some(l), Some(q)) = (s.listeners.pop_front(), s.rev_queue.pop_front()) else {
                    return;
                };
                (l.0, l.1, q)
            };
            // primROut = {ctx, handle, sc, bufsLenReq}; out-buffer 1 = the packed request.
            let mut prim = [0u8; 16];
            prim[0..4].copy_from_slice(&rctx.to_le_bytes());
            prim[4..8].copy_from_slice(&handle.to_le_bytes());
            prim[8..12].copy_from_slice(&sc.to_le_bytes());
            prim[12..16].copy_from_slice(&(packed.len() as u32).to_le_bytes());
            ld.outs[0].copy_from_slice(&prim);
            if packed.len() <= ld.outs[1].len() {
                ld.outs[1].truncate(packed.len());
                ld.outs[1].copy_from_slice(&packed);
            }
            self.write_back(&self.payload(&lmsg), &lmsg, &ld, 0);
            self.respond(&lmsg, 0, Fault::None);
        }
    }

    /// `adsp_listener.next2`: deliver the previous reverse reply, then wait for a request.
    pub(super) fn listener_next2(&self, msg: &FastRpcMsg, d: Decoded) -> Option<i32> {
        let bad = aee::dsp(aee::EBADPARM);
        if d.call.sc != Scalars::makex(0, 4, 2, 2, 0, 0) || d.outs[0].len() != 16 {
            self.write_back(&self.payload(msg), msg, &d, bad);
            return Some(bad);
        }
        let p = &d.ins[0];
        let word = |o: usize| {
            p.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(prev_ctx), Some(prev_result)) = (word(0), word(4)) else {
            self.write_back(&self.payload(msg), msg, &d, bad);
            return Some(bad);
        };
        if prev_ctx != 0 {
            let parked = lock(&self.state).parked.remove(&prev_ctx);
            if let Some((amsg, mut ad, nout)) = parked {
                let mut rev_outs: Vec<&[u8]> = vec![&[]; nout];
                let mut none: [u32; 0] = [];
                let result = match reverse::unpack(&d.ins[1], &mut rev_outs, &mut none) {
                    Ok(_) => prev_result as i32,
                    Err(_) => bad,
                };
                let r = match self.objects.lock().get_mut(&ad.call.handle) {
                    Some(o) => o.reverse_done(&ad.call, &ad.ins, &mut ad.outs, result, &rev_outs),
                    None => aee::dsp(aee::EINVHANDLE),
                };
                self.write_back(&self.payload(&amsg), &amsg, &ad, r);
                self.respond(&amsg, r, Fault::None);
            }
        }
        lock(&self.state).listeners.push_back((*msg, d));
        self.pump_listeners();
        None
    }
}
