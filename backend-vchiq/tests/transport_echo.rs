//! The transport over the simulated VideoCore's 'echo' service, in both completion modes
//! (quick checks written before the shared conformance macro existed; kept as regressions).

use std::time::Duration;

use fwipc_transport_api::fixture::{echo_reply, Fault, Fixture};
use fwipc_transport_api::{
    call, BulkDir, BulkRequest, Completion, Error, Request, StdClock, Transport, TxOutcome, Wait,
};
use fwipc_vchiq::sim::VchiqFixture;

fn roundtrip(f: &VchiqFixture, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let clock = StdClock::new();
    let mut out = vec![0u8; 4096];
    let relax = || std::thread::yield_now();
    let n = call(
        f.transport(),
        &clock,
        &Request::new(f.echo_target(), payload),
        &mut out,
        Duration::from_secs(5),
        Wait::SpinThenYield {
            spins: 100,
            relax: &relax,
        },
    )?;
    out.truncate(n);
    Ok(out)
}

#[test]
fn echo_roundtrip_all_sizes_both_modes() {
    for &mode in VchiqFixture::modes() {
        let f = VchiqFixture::setup(mode);
        let max = f.transport().max_msg_size();
        for size in [0usize, 1, 3, 4, 7, 8, 100, 1000, 4000, max] {
            let req: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            let rep = roundtrip(&f, &req).unwrap();
            let mut want = vec![0u8; size];
            echo_reply(&req, &mut want);
            assert_eq!(rep, want, "size {size} mode {mode:?}");
        }
        let s = f.transport().stats();
        assert_eq!(s.pool_free, s.pool_capacity);
        assert_eq!(s.protocol_errors, 0);
    }
}

#[test]
fn many_roundtrips_recycle_slots() {
    let f = VchiqFixture::setup(Completion::Interrupt);
    let req = vec![0x5Au8; 3000];
    for i in 0..500u32 {
        let mut r = req.clone();
        r[..4].copy_from_slice(&i.to_le_bytes());
        let rep = roundtrip(&f, &r).unwrap();
        assert_eq!(rep[0], !r[0]);
    }
    assert_eq!(f.remote().take_seen_tags(), (0..500).collect::<Vec<_>>());
    assert!(
        f.pair().slave().stats().slots_recycled > 31,
        "slots were reused"
    );
}

#[test]
fn timeout_then_late_reply_counted() {
    let f = VchiqFixture::setup(Completion::Interrupt);
    f.remote().set_fault(Fault::Hold);
    let clock = StdClock::new();
    let mut out = [0u8; 64];
    let relax = || std::thread::yield_now();
    let r = call(
        f.transport(),
        &clock,
        &Request::new(f.echo_target(), b"late"),
        &mut out,
        Duration::from_millis(50),
        Wait::SpinThenYield {
            spins: 10,
            relax: &relax,
        },
    );
    assert_eq!(r, Err(Error::Timeout));
    let s = f.transport().stats();
    assert_eq!(
        s.pool_free,
        s.pool_capacity - 1,
        "buffer kept while the remote holds it"
    );
    f.remote().set_fault(Fault::None);
    f.remote().release();
    let t0 = std::time::Instant::now();
    while f.transport().stats().late_replies == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = f.transport().stats();
    assert_eq!(s.pool_free, s.pool_capacity);
    assert_eq!(
        roundtrip(&f, b"next").unwrap(),
        vec![!b'n', !b'e', !b'x', !b't']
    );
}

#[test]
fn pool_exhaustion_is_busy_then_recovers() {
    let f = VchiqFixture::setup(Completion::Interrupt);
    f.remote().set_fault(Fault::Hold);
    let t = f.transport();
    let tickets: Vec<_> = (0..t.max_msg())
        .map(|i| {
            t.send(&Request::new(f.echo_target(), &[i as u8; 16]))
                .unwrap()
        })
        .collect();
    assert_eq!(
        t.send(&Request::new(f.echo_target(), b"x")).unwrap_err(),
        Error::Busy
    );
    f.remote().set_fault(Fault::None);
    f.remote().release();
    for tk in tickets {
        let t0 = std::time::Instant::now();
        while !t.poll_done(&tk).unwrap() {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::yield_now();
        }
        t.mark_txdone(tk, TxOutcome::Done);
    }
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

#[test]
fn hostile_remote_then_recovers() {
    let f = VchiqFixture::setup(Completion::Interrupt);
    for fault in [
        Fault::CorruptHeader,
        Fault::CorruptLength,
        Fault::WrongToken,
        Fault::Duplicate,
    ] {
        f.remote().set_fault(fault);
        let _ = roundtrip_short(&f, b"evil");
        f.remote().set_fault(Fault::None);
        assert_eq!(
            roundtrip(&f, b"good").unwrap(),
            vec![!b'g', !b'o', !b'o', !b'd'],
            "{fault:?}"
        );
    }
    let mut seed = 0x1234_5678u32;
    for len in [0usize, 1, 7, 8, 12, 64, 500, 4096] {
        let g: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        f.remote().inject_garbage(&g);
        assert_eq!(
            roundtrip(&f, b"okay").unwrap().len(),
            4,
            "after garbage of {len}"
        );
    }
    assert!(f.transport().stats().protocol_errors > 0);
}

fn roundtrip_short(f: &VchiqFixture, p: &[u8]) -> Result<usize, Error> {
    let clock = StdClock::new();
    let mut out = vec![0u8; 4096];
    let relax = || std::thread::yield_now();
    call(
        f.transport(),
        &clock,
        &Request::new(f.echo_target(), p),
        &mut out,
        Duration::from_millis(100),
        Wait::SpinThenYield {
            spins: 10,
            relax: &relax,
        },
    )
}

#[test]
fn notifications_arrive_in_order() {
    for &mode in VchiqFixture::modes() {
        let f = VchiqFixture::setup(mode);
        for i in 0..5u8 {
            assert!(f.remote().notify(&[i; 3]));
        }
        let mut got = Vec::new();
        let mut out = [0u8; 64];
        let t0 = std::time::Instant::now();
        while got.len() < 5 {
            if let Some(n) = f.transport().fetch_notification(&mut out).unwrap() {
                got.push(out[..n.len].to_vec());
            }
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
    }
}

#[test]
fn reset_mid_flight_fails_in_flight_and_recovers() {
    let f = VchiqFixture::setup(Completion::Interrupt);
    f.remote().set_fault(Fault::Hold);
    let t = f.transport();
    let tk = t.send(&Request::new(f.echo_target(), b"inflight")).unwrap();
    f.remote().reset_remote();
    f.remote().set_fault(Fault::None);
    let t0 = std::time::Instant::now();
    let r = loop {
        match t.poll_done(&tk) {
            Ok(false) => std::thread::yield_now(),
            r => break r,
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    };
    assert_eq!(r, Err(Error::Cancelled));
    t.mark_txdone(tk, TxOutcome::Cancelled);
    let t0 = std::time::Instant::now();
    loop {
        match roundtrip(&f, b"again") {
            Ok(r) => {
                assert_eq!(r.len(), 5);
                break;
            }
            Err(Error::Retry) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}

#[test]
fn bulk_transmit_then_receive_byte_exact() {
    for &mode in VchiqFixture::modes() {
        let f = VchiqFixture::setup(mode);
        let t = f.transport();
        for (off, len) in [(0usize, 1usize), (3, 100), (63, 4097), (1, 65536), (17, 0)] {
            let mut data = vec![0u8; off + len];
            for (i, b) in data.iter_mut().enumerate() {
                *b = (i * 31 + len) as u8;
            }
            let tx = t
                .bulk(BulkRequest {
                    target: f.echo_target(),
                    dir: BulkDir::Transmit,
                    buf: data.clone(),
                    offset: off,
                    len,
                })
                .unwrap();
            let rx = t
                .bulk(BulkRequest {
                    target: f.echo_target(),
                    dir: BulkDir::Receive,
                    buf: vec![0xEE; off + len + 5],
                    offset: off,
                    len,
                })
                .unwrap();
            for tk in [&tx, &rx] {
                let t0 = std::time::Instant::now();
                while !t.poll_done(tk).unwrap() {
                    assert!(t0.elapsed() < Duration::from_secs(5), "bulk {off}/{len}");
                    std::thread::yield_now();
                }
            }
            assert_eq!(t.take_bulk(tx).unwrap().actual, len);
            let r = t.take_bulk(rx).unwrap();
            assert_eq!(r.actual, len);
            assert_eq!(&r.buf[off..off + len], &data[off..off + len], "{off}/{len}");
            assert!(
                r.buf[..off]
                    .iter()
                    .chain(&r.buf[off + len..])
                    .all(|&b| b == 0xEE),
                "guards"
            );
        }
        assert_eq!(f.pair().master().stats().unaligned_reads, 0);
        assert_eq!(f.pair().bus().mapped_pages(), 0);
    }
}

/// An interrupt-mode waiter polls the instance itself: a reply already in the slots completes
/// on the waiter's context, not only once the ARM-side worker runs. Here there is no ARM-side
/// worker at all (the doorbell wakes no one), so only the waiter's own polls can see the reply.
#[test]
fn interrupt_mode_waiter_completes_a_reply_without_the_worker() {
    use fwipc_vchiq::sim::framed_echo::{EchoService, ECHO_FOURCC};
    use fwipc_vchiq::sim::{SimPair, SIM_WAIT};
    use fwipc_vchiq::{Config, ServiceParams, VchiqTransport};
    let pair = SimPair::with_config(Config::default().with_wait(SIM_WAIT), false).unwrap();
    let _echo = EchoService::add_to(pair.master(), ServiceParams::new(ECHO_FOURCC)).unwrap();
    pair.connect().unwrap();
    let t = VchiqTransport::open(
        pair.slave().clone(),
        ServiceParams::new(ECHO_FOURCC).quotas(u32::MAX, 0),
        Completion::Interrupt,
        4,
        Duration::from_secs(5),
    )
    .unwrap();
    let relax = || std::thread::yield_now();
    let mut out = [0u8; 64];
    for i in 0..4u8 {
        let req = [i, 1, 2, 3];
        let n = call(
            &t,
            &StdClock::new(),
            &Request::new(ECHO_FOURCC, &req),
            &mut out,
            Duration::from_secs(5),
            Wait::SpinThenYield {
                spins: 100,
                relax: &relax,
            },
        )
        .unwrap();
        let mut want = [0u8; 4];
        echo_reply(&req, &mut want);
        assert_eq!(&out[..n], &want);
    }
    t.shutdown().unwrap();
}

/// A reply names its transfer twice, by token and by buffer (`frame::request_token`). One whose
/// token is another transfer's in flight, under the first transfer's buffer, completes neither
/// (by its token alone it would complete the other, handing that caller this reply), and is
/// counted as a protocol error; the same reply naming both of the other transfer's names
/// completes it.
#[test]
fn a_reply_under_another_transfers_token_completes_nothing() {
    use fwipc_vchiq::frame::request_token;
    use fwipc_vchiq::sim::framed_echo::encode_frame;

    let f = VchiqFixture::setup(Completion::Polled);
    let t = f.transport();
    f.remote().set_fault(Fault::Hold);
    let a = t.send(&Request::new(f.echo_target(), b"aaaa")).unwrap();
    let b = t.send(&Request::new(f.echo_target(), b"bbbb")).unwrap();
    assert_ne!(a.slot(), b.slot());
    let reply = |token: u32, slot: u32, body: &[u8]| {
        encode_frame(request_token(token, slot), body.len() as u32, body)
    };
    let poll_until = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let t0 = std::time::Instant::now();
        while !done() {
            assert!(t0.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::yield_now();
        }
    };
    let errors = t.stats().protocol_errors;
    f.remote()
        .inject_garbage(&reply(b.token(), a.slot(), b"forged"));
    poll_until(
        "the forged reply was never refused",
        Box::new(|| t.poll_done(&b).unwrap() || t.stats().protocol_errors > errors),
    );
    assert!(
        !t.poll_done(&b).unwrap(),
        "completed by a reply naming another buffer"
    );
    assert!(
        !t.poll_done(&a).unwrap(),
        "completed by a reply naming another token"
    );
    f.remote()
        .inject_garbage(&reply(b.token(), b.slot(), b"named"));
    poll_until("b's own names", Box::new(|| t.poll_done(&b).unwrap()));
    let mut out = [0u8; 16];
    assert_eq!(t.fetch_response(&b, &mut out), Ok(5));
    assert_eq!(&out[..5], b"named");
    t.mark_txdone(b, TxOutcome::Done);
    f.remote().set_fault(Fault::None);
    f.remote().release();
    poll_until("a's held reply", Box::new(|| t.poll_done(&a).unwrap()));
    assert_eq!(t.fetch_response(&a, &mut out), Ok(4));
    assert_eq!(out[..4], [!b'a'; 4]);
    t.mark_txdone(a, TxOutcome::Done);
}
