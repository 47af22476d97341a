//! DSP capability query (`GET_DSP_INFO`, docs/protocols/fastrpc.md §8): handle 2 (DSP utilities)
//! method 0, `sc = 0x00010100`: in = u32 attribute *count* (the 2024 fix: not a byte size), out =
//! u32 array. Fetched once per channel and cached; the modem DSP refuses queries (`-ECHRNG`), and a
//! DSP answering `AEE_EUNSUPPORTED` means "not supported" (`-EOPNOTSUPP`).

use crate::error::{aee, AeeError, FastRpcError, Result};
use crate::session::{Arg, Session};
use crate::wire::DSP_ATTRIBUTES;

/// Handle of the DSP utilities interface.
pub(super) const DSP_UTILITIES_HANDLE: u32 = 2;

impl Session {
    /// DSP attribute `id` (< 256). Attribute 0 is left to user space by the driver; this returns
    /// what the DSP wrote there **(unverified)** semantics.
    pub fn dsp_capability(&self, id: u32) -> Result<u32> {
        let ch = &self.inner.ch;
        ch.cfg.domain.check_capability_query()?;
        let idx = usize::try_from(id)
            .ok()
            .filter(|i| *i < DSP_ATTRIBUTES)
            .ok_or(FastRpcError::InvalidArgument)?;
        if let Some(c) = ch.dsp_info.lock().as_ref() {
            return Ok(c[idx]);
        }
        let mut raw = [0u8; DSP_ATTRIBUTES * 4];
        let count = (DSP_ATTRIBUTES as u32).to_le_bytes();
        let r = self.invoke_inner(
            DSP_UTILITIES_HANDLE,
            0,
            &mut [Arg::In(&count), Arg::Out(&mut raw)],
            true,
            None,
        );
        match r {
            Err(FastRpcError::Aee(AeeError(code))) if code == aee::dsp(aee::EUNSUPPORTED) => {
                return Err(FastRpcError::NotSupported)
            }
            r => r?,
        }
        let mut attrs = alloc::boxed::Box::new([0u32; DSP_ATTRIBUTES]);
        for (a, b) in attrs.iter_mut().zip(raw.chunks_exact(4)) {
            *a = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let v = attrs[idx];
        *ch.dsp_info.lock() = Some(attrs);
        Ok(v)
    }
}
