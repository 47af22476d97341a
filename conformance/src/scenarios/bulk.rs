//! Bulk integrity at odd offsets and sizes (the head/tail fragment case that corrupted data in the
//! Linux VCHIQ driver's `vchiq_test -f 1` on arm64).

use std::time::Instant;

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{BulkDir, BulkRequest, Error, Transport};

use super::Verdict;
use crate::util::{assert_pool_full, eventually, Rng};

const SENTINEL: u8 = 0xA5;

fn run_bulk<F: Fixture>(
    fx: &F,
    dir: BulkDir,
    buf: Vec<u8>,
    offset: usize,
    len: usize,
) -> (Vec<u8>, usize) {
    let t = fx.transport();
    let req = BulkRequest {
        target: fx.echo_target(),
        dir,
        buf,
        offset,
        len,
    };
    let ticket = match t.bulk(req) {
        Ok(ticket) => ticket,
        Err((e, _)) => panic!(
            "{}: bulk {dir:?} off {offset} len {len} refused: {e}",
            F::NAME
        ),
    };
    let done = eventually(fx.reply_timeout(), || t.poll_done(&ticket).unwrap_or(true));
    assert!(
        done,
        "{}: bulk {dir:?} off {offset} len {len} never completed",
        F::NAME
    );
    match t.take_bulk(ticket) {
        Ok(r) => (r.buf, r.actual),
        Err((e, ticket)) => {
            t.mark_txdone(ticket, fwipc_transport_api::TxOutcome::Cancelled);
            panic!(
                "{}: bulk {dir:?} off {offset} len {len} failed: {e:?}",
                F::NAME
            )
        }
    }
}

/// Transmit random data from an odd offset, receive it back into another odd offset: byte-exact,
/// and not one byte outside the range touched.
pub fn bulk_integrity<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.bulk {
        return Verdict::NotApplicable("transport has no bulk transfers");
    }
    let mut rng = Rng::new(8);
    let mut sizes = vec![
        1usize, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097, 12289,
    ];
    sizes.retain(|&s| s <= caps.max_bulk_size);
    let start = Instant::now();
    let mut cases = 0;
    for &len in &sizes {
        for off in [0usize, 1, 3, 7, 31, 32, 33, 63] {
            let rx_off = (off * 7 + 5) % 64;
            let mut tx = vec![SENTINEL; off + len + 64];
            rng.fill(&mut tx[off..off + len]);
            let data = tx[off..off + len].to_vec();
            let (tx_back, n) = run_bulk(&fx, BulkDir::Transmit, tx, off, len);
            assert_eq!(n, len, "{}: transmit of {len} at {off} moved {n}", F::NAME);
            assert_eq!(
                &tx_back[off..off + len],
                &data[..],
                "{}: transmit buffer modified",
                F::NAME
            );
            let rx = vec![SENTINEL; rx_off + len + 64];
            let (rx_back, n) = run_bulk(&fx, BulkDir::Receive, rx, rx_off, len);
            assert_eq!(
                n,
                len,
                "{}: receive of {len} at {rx_off} moved {n}",
                F::NAME
            );
            assert!(
                rx_back[..rx_off].iter().all(|&b| b == SENTINEL),
                "{}: head clobbered at off {rx_off} len {len}",
                F::NAME
            );
            assert!(
                rx_back[rx_off + len..].iter().all(|&b| b == SENTINEL),
                "{}: tail clobbered at off {rx_off} len {len}",
                F::NAME
            );
            if let Some(i) = (0..len).find(|&i| rx_back[rx_off + i] != data[i]) {
                panic!(
                    "{}: bulk data corrupt at byte {i} (off {off}/{rx_off}, len {len})",
                    F::NAME
                );
            }
            cases += 1;
        }
    }
    // A bulk larger than the transport allows is refused, with the buffer handed back.
    if caps.max_bulk_size < usize::MAX / 2 {
        let big = caps.max_bulk_size + 1;
        let req = BulkRequest {
            target: fx.echo_target(),
            dir: BulkDir::Transmit,
            buf: vec![0; big],
            offset: 0,
            len: big,
        };
        match fx.transport().bulk(req) {
            Err((e, back)) => {
                assert!(
                    matches!(e, Error::TooLarge | Error::InvalidArgument),
                    "{}: oversize bulk gave {e:?}",
                    F::NAME
                );
                assert_eq!(
                    back.buf.len(),
                    big,
                    "{}: oversize bulk buffer not returned",
                    F::NAME
                );
            }
            Ok(_) => panic!("{}: oversize bulk accepted", F::NAME),
        }
    }
    log::info!("{}: {cases} bulk cases in {:?}", F::NAME, start.elapsed());
    assert_pool_full(&fx, "after bulk");
    Verdict::Pass
}
