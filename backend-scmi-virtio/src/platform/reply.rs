//! Platform-side codecs: a reply writer bounded by the device-writable space, and a parameter
//! reader that never reads past the request.

use crate::status::code;

/// A status the handler answers with instead of return values.
pub type Status = i32;

/// Handler result: `Err(status)` becomes a status-only reply (the crate's `Result` alias style,
/// docs/contributing.md; named `reply::Result` beside the standard one).
pub type Result<T = ()> = core::result::Result<T, Status>;

/// Writes return values after header + status, never past the writable space. Running out of
/// space is COMMS_ERROR (the reply does not fit), as vhost-device-scmi answers.
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Out<'a> {
    /// Writer over `buf`, starting at `start` (after header + status).
    pub fn new(buf: &'a mut [u8], start: usize) -> Self {
        Out { buf, len: start }
    }

    /// Bytes written so far (header and status included).
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Writable bytes left.
    pub fn room(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }

    /// Append bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result {
        let end = self.len.checked_add(b.len()).ok_or(code::COMMS_ERROR)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(code::COMMS_ERROR)?;
        dst.copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    /// Append a LE word.
    pub fn u32(&mut self, w: u32) -> Result {
        self.bytes(&w.to_le_bytes())
    }

    /// Append a LE signed word.
    pub fn i32(&mut self, w: i32) -> Result {
        self.u32(w as u32)
    }

    /// Append a 64-bit value as (low, high).
    pub fn u64(&mut self, v: u64) -> Result {
        self.u32(v as u32)?;
        self.u32((v >> 32) as u32)
    }

    /// Append a NUL-padded 16-byte name (cut to 15 bytes).
    pub fn name16(&mut self, s: &str) -> Result {
        let n = crate::protocol::ShortName::from_str_truncated(s);
        self.bytes(n.field())
    }

    /// Append a NUL-padded 64-byte name (cut to 63 bytes).
    pub fn name64(&mut self, s: &str) -> Result {
        let n = crate::protocol::LongName::from_str_truncated(s);
        self.bytes(n.field())
    }

    /// Overwrite a word already written at byte offset `at`.
    pub fn patch_u32(&mut self, at: usize, w: u32) -> Result {
        let dst = self
            .buf
            .get_mut(at..at.saturating_add(4))
            .ok_or(code::COMMS_ERROR)?;
        dst.copy_from_slice(&w.to_le_bytes());
        Ok(())
    }
}

/// Request parameters (bytes after the header).
#[derive(Clone, Copy)]
pub struct Params<'a> {
    bytes: &'a [u8],
}

impl<'a> Params<'a> {
    /// Wrap the parameter bytes.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Params { bytes }
    }

    /// The raw bytes.
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Exactly `N` words, else PROTOCOL_ERROR (vhost-device-scmi requires the exact length
    /// 4 + 4·n too; it wedges, we answer with a status).
    pub fn exact<const N: usize>(&self) -> Result<[u32; N]> {
        if self.bytes.len() != N * 4 {
            return Err(code::PROTOCOL_ERROR);
        }
        let mut out = [0u32; N];
        for (o, c) in out.iter_mut().zip(self.bytes.chunks_exact(4)) {
            let mut w = [0u8; 4];
            w.copy_from_slice(c);
            *o = u32::from_le_bytes(w);
        }
        Ok(out)
    }
}

/// A message without parameters answered with one word: PROTOCOL_ERROR unless the request has
/// no parameters, then `w`.
pub fn word_reply(p: Params<'_>, out: &mut Out<'_>, w: u32) -> Result {
    p.exact::<0>()?;
    out.u32(w)
}

/// Entries of `size` bytes that fit `room`, capped by `max` (0 = no cap) and `available`.
pub fn fit(room: usize, size: usize, available: usize, max: usize) -> usize {
    let by_room = room.checked_div(size).unwrap_or(0);
    let n = by_room.min(available);
    if max == 0 {
        n
    } else {
        n.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_never_writes_past_the_writable_space() {
        let mut buf = [0u8; 14];
        let mut o = Out::new(&mut buf, 8);
        assert_eq!(o.room(), 6);
        o.u32(0x0403_0201).unwrap();
        assert_eq!(o.u32(5), Err(code::COMMS_ERROR));
        assert_eq!(o.len(), 12);
        o.bytes(&[9, 9]).unwrap();
        assert_eq!(o.bytes(&[1]), Err(code::COMMS_ERROR));
        assert_eq!(o.patch_u32(12, 1), Err(code::COMMS_ERROR));
        o.patch_u32(8, 7).unwrap();
        assert_eq!(&buf[8..14], &[7, 0, 0, 0, 9, 9]);
    }

    #[test]
    fn params_need_the_exact_length() {
        let b = [1, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(Params::new(&b).exact::<2>(), Ok([1, 2]));
        assert_eq!(Params::new(&b).exact::<1>(), Err(code::PROTOCOL_ERROR));
        assert_eq!(Params::new(&b[..7]).exact::<2>(), Err(code::PROTOCOL_ERROR));
        assert_eq!(Params::new(&[]).exact::<0>(), Ok([]));
    }

    #[test]
    fn fit_counts_whole_entries() {
        assert_eq!(fit(124, 28, 20, 0), 4);
        assert_eq!(fit(124, 28, 3, 0), 3);
        assert_eq!(fit(124, 28, 20, 2), 2);
        assert_eq!(fit(10, 0, 5, 0), 0);
    }
}
