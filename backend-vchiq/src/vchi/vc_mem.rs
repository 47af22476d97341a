//! The vc_mem query of VideoCore memory (docs/protocols/vchiq.md §8): where the VideoCore's RAM is
//! (bus base), how big it is, and where the firmware was loaded. It is not a VCHIQ service: Linux
//! reads it from the firmware's DT node `raspberrypi,vc-mem` (`reg` = three big-endian 32-bit
//! cells), and the same base/size can be asked of the firmware with the mailbox property tag
//! `GET_VC_MEMORY` (0x0001_0006). Both are remote input and are parsed bounds-checked here; the
//! simulated VideoCore answers the property request with [`answer_property`].
//!
//! The `/dev/vc-mem` ioctl surface is mirrored by [`VcMemInfo::ioctl`] and the mmap range check by
//! [`VcMemInfo::check_window`].

use fwipc_transport_api::ProtocolError;

use super::error::VchiError;

/// Mailbox property tag "get VideoCore memory": response value = {u32 base, u32 size}.
pub const TAG_GET_VC_MEMORY: u32 = 0x0001_0006;
/// Property buffer code of a request.
pub const PROP_REQUEST: u32 = 0;
/// Property buffer code of a successful response.
pub const PROP_SUCCESS: u32 = 0x8000_0000;
/// Bit 31 of a tag's request/response word marks a response; the low 31 bits are its length.
pub const TAG_RESPONSE: u32 = 0x8000_0000;
/// Length of the GET_VC_MEMORY property buffer.
pub const GET_VC_MEMORY_LEN: usize = 32;
/// Mask from a VideoCore bus address to an ARM physical address (old `mach/vc_mem.h`).
pub const VC_MEM_TO_ARM_ADDR_MASK: u32 = 0x3FFF_FFFF;

const fn ior(nr: u32, size: u32) -> u32 {
    (2 << 30) | (size << 16) | ((b'v' as u32) << 8) | nr
}
/// `VC_MEM_IOC_MEM_PHYS_ADDR` with a 64-bit `unsigned long`.
pub const IOC_MEM_PHYS_ADDR: u32 = ior(0, 8);
/// The 32-bit compat form of `VC_MEM_IOC_MEM_PHYS_ADDR`.
pub const IOC_MEM_PHYS_ADDR32: u32 = ior(0, 4);
/// `VC_MEM_IOC_MEM_SIZE`.
pub const IOC_MEM_SIZE: u32 = ior(1, 4);
/// `VC_MEM_IOC_MEM_BASE`.
pub const IOC_MEM_BASE: u32 = ior(2, 4);
/// `VC_MEM_IOC_MEM_LOAD` (today the same value as BASE).
pub const IOC_MEM_LOAD: u32 = ior(3, 4);

/// VideoCore memory as the vc_mem driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcMemInfo {
    /// ARM physical address of VideoCore memory (`base & 0x3FFF_FFFF`; current Linux reports 0,
    /// "TODO: translate base using ranges").
    pub phys_addr: u64,
    /// VideoCore bus base of its memory.
    pub base: u32,
    /// Size in bytes.
    pub size: u32,
    /// Load address of the firmware image (Linux reports BASE for it).
    pub load: u32,
}

impl VcMemInfo {
    fn new(base: u32, size: u32) -> Result<Self, ProtocolError> {
        if size == 0 || base.checked_add(size - 1).is_none() {
            return Err(ProtocolError::OutOfRange);
        }
        Ok(VcMemInfo {
            phys_addr: u64::from(base & VC_MEM_TO_ARM_ADDR_MASK),
            base,
            size,
            load: base,
        })
    }

    /// From the firmware DT node's `reg` property: exactly 12 bytes, big-endian cells
    /// `<base size third>` (the third cell is unused by Linux; its meaning is unverified).
    pub fn from_dt_reg(reg: &[u8]) -> Result<Self, ProtocolError> {
        let cells: &[u8; 12] = reg.try_into().map_err(|_| ProtocolError::BadLength)?;
        let be =
            |i: usize| u32::from_be_bytes([cells[i], cells[i + 1], cells[i + 2], cells[i + 3]]);
        Self::new(be(0), be(4))
    }

    /// From a mailbox property buffer the firmware answered (see [`encode_get_vc_memory`]).
    pub fn from_property_response(buf: &[u8]) -> Result<Self, ProtocolError> {
        let (base, size) = parse_get_vc_memory(buf)?;
        Self::new(base, size)
    }

    /// The value `/dev/vc-mem`'s ioctl `cmd` would copy out; unknown commands are invalid
    /// (ENOTTY in Linux).
    pub fn ioctl(&self, cmd: u32) -> Result<u64, VchiError> {
        match cmd {
            IOC_MEM_PHYS_ADDR => Ok(self.phys_addr),
            IOC_MEM_PHYS_ADDR32 => Ok(self.phys_addr & 0xFFFF_FFFF),
            IOC_MEM_SIZE => Ok(u64::from(self.size)),
            IOC_MEM_BASE | IOC_MEM_LOAD => Ok(u64::from(self.base)),
            _ => Err(VchiError::InvalidArgument),
        }
    }

    /// The mmap check of vc_mem: `offset..offset+len` must lie inside the memory (written so it
    /// cannot overflow).
    pub fn check_window(&self, offset: u64, len: u64) -> Result<(), VchiError> {
        let size = u64::from(self.size);
        if offset > size || len > size - offset {
            return Err(VchiError::InvalidArgument);
        }
        Ok(())
    }
}

/// Word `i` of `buf`. Index arithmetic is checked: on a 32-bit target a remote-supplied index
/// times 4 must not wrap into the buffer.
fn word(buf: &[u8], i: usize) -> Result<u32, ProtocolError> {
    let start = i.checked_mul(4).ok_or(ProtocolError::BadLength)?;
    let b = buf
        .get(start..)
        .and_then(|b| b.first_chunk::<4>())
        .ok_or(ProtocolError::Truncated)?;
    Ok(u32::from_le_bytes(*b))
}

fn put(buf: &mut [u8], i: usize, v: u32) {
    buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

/// The GET_VC_MEMORY property request: `{size, code, tag, value_size 8, req 0, 0, 0, end 0}`.
pub fn encode_get_vc_memory() -> [u8; GET_VC_MEMORY_LEN] {
    let mut b = [0u8; GET_VC_MEMORY_LEN];
    for (i, v) in [
        GET_VC_MEMORY_LEN as u32,
        PROP_REQUEST,
        TAG_GET_VC_MEMORY,
        8,
        0,
        0,
        0,
        0,
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut b, i, v);
    }
    b
}

/// Walk a property response and return GET_VC_MEMORY's `(base, size)`. Checks the buffer
/// size word, the success code, each tag's value size against the buffer, the response bit and
/// the response length; stops at the end tag.
pub fn parse_get_vc_memory(buf: &[u8]) -> Result<(u32, u32), ProtocolError> {
    let total = word(buf, 0)? as usize;
    if total > buf.len() || total & 3 != 0 || total < 12 {
        return Err(ProtocolError::BadLength);
    }
    let buf = &buf[..total];
    if word(buf, 1)? != PROP_SUCCESS {
        return Err(ProtocolError::BadHeader);
    }
    let mut i = 2;
    loop {
        let tag = word(buf, i)?;
        if tag == 0 {
            return Err(ProtocolError::UnexpectedMessage);
        }
        let vsize = word(buf, i + 1)? as usize;
        let code = word(buf, i + 2)?;
        // Checked: the value size is the remote's, and on a 32-bit target `(i + 3 + vwords) * 4`
        // wraps for a size near `u32::MAX`, which would pass the bounds check and walk forever.
        let next = vsize
            .div_ceil(4)
            .checked_add(i + 3)
            .filter(|n| n.checked_mul(4).is_some_and(|end| end <= buf.len()))
            .ok_or(ProtocolError::BadLength)?;
        if tag == TAG_GET_VC_MEMORY {
            if code & TAG_RESPONSE == 0 {
                return Err(ProtocolError::BadState);
            }
            let len = (code & !TAG_RESPONSE) as usize;
            if len < 8 || vsize < 8 {
                return Err(ProtocolError::Truncated);
            }
            return Ok((word(buf, i + 3)?, word(buf, i + 4)?));
        }
        i = next;
    }
}

/// VideoCore side: answer a GET_VC_MEMORY request in place (the firmware's role in the
/// simulator). Unknown tags are left unanswered, as the firmware does.
pub fn answer_property(buf: &mut [u8], base: u32, size: u32) -> Result<(), ProtocolError> {
    let total = word(buf, 0)? as usize;
    if total > buf.len() || total < 12 || word(buf, 1)? != PROP_REQUEST {
        return Err(ProtocolError::BadHeader);
    }
    let mut i = 2;
    while let Ok(tag) = word(&buf[..total], i) {
        if tag == 0 {
            put(buf, 1, PROP_SUCCESS);
            return Ok(());
        }
        let vsize = word(&buf[..total], i + 1)? as usize;
        if (i + 3 + vsize.div_ceil(4)) * 4 > total {
            return Err(ProtocolError::BadLength);
        }
        if tag == TAG_GET_VC_MEMORY && vsize >= 8 {
            put(buf, i + 2, TAG_RESPONSE | 8);
            put(buf, i + 3, base);
            put(buf, i + 4, size);
        }
        i += 3 + vsize.div_ceil(4);
    }
    Err(ProtocolError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(IOC_MEM_PHYS_ADDR, 0x8008_7600);
        assert_eq!(IOC_MEM_SIZE, 0x8004_7601);
        assert_eq!(IOC_MEM_BASE, 0x8004_7602);
        assert_eq!(IOC_MEM_LOAD, 0x8004_7603);
    }

    #[test]
    fn dt_reg_and_property_agree() {
        let reg = [0x3e, 0, 0, 0, 0x02, 0, 0, 0, 0x10, 0, 0, 0];
        let a = VcMemInfo::from_dt_reg(&reg).unwrap();
        assert_eq!(
            (a.base, a.size, a.load),
            (0x3e00_0000, 0x0200_0000, 0x3e00_0000)
        );
        assert!(VcMemInfo::from_dt_reg(&reg[..8]).is_err());
        let mut b = encode_get_vc_memory();
        assert!(
            parse_get_vc_memory(&b).is_err(),
            "an unanswered request is not a reply"
        );
        answer_property(&mut b, 0x3e00_0000, 0x0200_0000).unwrap();
        let p = VcMemInfo::from_property_response(&b).unwrap();
        assert_eq!(p, a);
        assert_eq!(p.ioctl(IOC_MEM_SIZE), Ok(0x0200_0000));
        assert_eq!(p.ioctl(IOC_MEM_LOAD), Ok(0x3e00_0000));
        assert_eq!(p.ioctl(IOC_MEM_PHYS_ADDR), Ok(0x3e00_0000));
        assert_eq!(p.ioctl(0x1234), Err(VchiError::InvalidArgument));
        assert_eq!(p.check_window(0, 0x0200_0000), Ok(()));
        assert!(p.check_window(1, 0x0200_0000).is_err());
        assert!(p.check_window(u64::MAX, 2).is_err());
    }

    #[test]
    fn lying_lengths_are_rejected() {
        let mut b = encode_get_vc_memory();
        answer_property(&mut b, 0x1000, 0x2000).unwrap();
        let mut big = b;
        put(&mut big, 0, 64);
        assert_eq!(parse_get_vc_memory(&big), Err(ProtocolError::BadLength));
        let mut vs = b;
        put(&mut vs, 3, 0x1000);
        assert_eq!(parse_get_vc_memory(&vs), Err(ProtocolError::BadLength));
        let mut short = b;
        put(&mut short, 4, TAG_RESPONSE | 4);
        assert_eq!(parse_get_vc_memory(&short), Err(ProtocolError::Truncated));
        let mut wrap = b;
        put(&mut wrap, 5, 0xFFFF_F000);
        assert!(VcMemInfo::from_property_response(&wrap).is_err());
    }

    /// A value size near `u32::MAX` must be a length error on every word size. On a 32-bit
    /// target the unchecked `(i + 3 + vwords) * 4` wrapped to a small number, passed the bounds
    /// check and sent the walk around the buffer forever (run under Miri for i686 in CI).
    #[test]
    fn value_size_near_u32_max_is_rejected() {
        for vsize in [
            0xFFFF_FFF0u32,
            0xFFFF_FFFC,
            0xFFFF_FFFF,
            0x8000_0000,
            0x4000_0000,
        ] {
            let mut b = [0u8; 40];
            put(&mut b, 0, 40);
            put(&mut b, 1, PROP_SUCCESS);
            put(&mut b, 2, 0x0001_0001); // some other tag, skipped by its value size
            put(&mut b, 3, vsize);
            put(&mut b, 4, TAG_RESPONSE);
            put(&mut b, 5, TAG_GET_VC_MEMORY);
            put(&mut b, 6, 8);
            put(&mut b, 7, TAG_RESPONSE | 8);
            assert_eq!(
                parse_get_vc_memory(&b),
                Err(ProtocolError::BadLength),
                "value size {vsize:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn property_round_trip(base in 0u32..0x8000_0000, size in 1u32..0x4000_0000) {
            let mut b = encode_get_vc_memory();
            answer_property(&mut b, base, size).unwrap();
            prop_assert_eq!(parse_get_vc_memory(&b), Ok((base, size)));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_get_vc_memory(&bytes);
            let _ = VcMemInfo::from_dt_reg(&bytes);
            let mut b = bytes.clone();
            let _ = answer_property(&mut b, 1, 2);
        }
    }
}
