//! Service fourccs. VCHIQ packs a fourcc big-end-first: `(c0<<24)|(c1<<16)|(c2<<8)|c3`
//! (docs/protocols/vchiq.md §0).

/// Pack four ASCII characters the way VCHIQ does.
pub const fn make_fourcc(s: &[u8; 4]) -> u32 {
    ((s[0] as u32) << 24) | ((s[1] as u32) << 16) | ((s[2] as u32) << 8) | (s[3] as u32)
}

/// The vc-sm-cma shared-memory service, `'SMEM'` = 0x534D454D.
pub const SMEM: u32 = make_fourcc(b"SMEM");
/// `'SMEM'` service version (docs/protocols/vchiq.md §8).
pub const SMEM_VERSION: i16 = 1;
/// `'SMEM'` minimum version.
pub const SMEM_VERSION_MIN: i16 = 0;
/// The `vchiq_test` echo server.
pub const ECHO: u32 = make_fourcc(b"echo");
/// The `vchiq_test` functional-test server (version 3, version_min 2).
pub const FUNC: u32 = make_fourcc(b"func");
/// `'func'` server version.
pub const FUNC_VERSION: i16 = 3;
/// `'func'` server minimum version.
pub const FUNC_VERSION_MIN: i16 = 2;
/// The `vchiq_test` alignment/fragment test server.
pub const FUN2: u32 = make_fourcc(b"fun2");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs_match_the_notes() {
        assert_eq!(SMEM, 0x534D_454D);
        assert_eq!(make_fourcc(b"VCHI"), 0x5643_4849);
        assert_eq!(ECHO, 0x6563_686F);
    }
}
