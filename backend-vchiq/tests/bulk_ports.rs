//! The VideoCore pairs bulk requests only on the ports they were queued on (one bit per port,
//! `Inner::bulk_ports`): transfers on services past the first 64 ports (the second word of the
//! set) and on the first ones, interleaved, all complete byte-exact.

use std::sync::Arc;
use std::time::Duration;

use fwipc_vchiq::consts::make_fourcc;
use fwipc_vchiq::sim::framed_echo::EchoService;
use fwipc_vchiq::sim::{SimPair, SIM_WAIT};
use fwipc_vchiq::{BulkMode, Config, Deliver, Event, ServiceCtx, ServiceParams};

const ECHO: u32 = make_fourcc(*b"echo");
const T: Duration = Duration::from_secs(5);

#[test]
fn bulks_on_ports_past_the_first_word_complete() {
    let mut cfg = Config::default().with_wait(SIM_WAIT);
    cfg.max_services = 160;
    let pair = SimPair::with_config(cfg, true).unwrap();
    // A server per client (a listening service takes one OPEN). Servers take the highest free
    // port: the first sits on port 159 (the set's third word), the 100th on port 60 (its
    // first).
    let echo = Arc::new(EchoService::new());
    for _ in 0..100 {
        pair.master()
            .add_service_arc(ServiceParams::new(ECHO), echo.clone())
            .unwrap();
    }
    pair.connect().unwrap();
    let v = pair.slave();
    let handles: Vec<_> = (0..100)
        .map(|_| {
            v.open_service_wait(
                ServiceParams::new(ECHO),
                Arc::new(|_: &ServiceCtx<'_>, _: Event<'_>| Deliver::Done),
                T,
            )
            .unwrap()
        })
        .collect();
    let mut tag = 0;
    for (k, &h) in [
        handles[0],
        handles[99],
        handles[50],
        handles[97],
        handles[1],
    ]
    .iter()
    .enumerate()
    {
        let len = 4096 + k * 100;
        let pattern: Vec<u8> = (0..len).map(|i| (i * 7 + k) as u8).collect();
        tag += 2;
        v.bulk_transmit(h, pattern.clone(), 0, len, tag, BulkMode::NoCallback)
            .unwrap();
        v.bulk_receive(h, vec![0; len], 0, len, tag + 1, BulkMode::NoCallback)
            .unwrap();
        let tx = v.wait_bulk(h, tag, T).expect("transmit completes");
        assert_eq!(tx.result, Ok(len), "service {k}: transmit");
        let rx = v.wait_bulk(h, tag + 1, T).expect("receive completes");
        assert_eq!(rx.result, Ok(len), "service {k}: receive");
        assert_eq!(rx.buf, pattern, "service {k}: echoed bytes");
    }
}
