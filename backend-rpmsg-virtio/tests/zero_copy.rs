//! Zero-copy sends on the rpmsg links: a loan is one of the link's own transmit buffers (on the
//! rings, a driver-owned virtqueue buffer), written in place, published with its header on
//! send, and given back when dropped, whatever happened to the link meanwhile.

use fwipc_rpmsg_virtio::addr::{HDR_SIZE, MAX_PAYLOAD};
use fwipc_rpmsg_virtio::frame::parse_frame;
use fwipc_rpmsg_virtio::hdr::RpmsgHdr;
use fwipc_rpmsg_virtio::sim::{RingDevice, RpmsgFixture, RpmsgRingFixture, PEER_ADDR};
use fwipc_rpmsg_virtio::{Link, LinkError};
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Completion, Error, Transport};
use zerocopy::IntoBytes;

mod common;
use common::ring_link;

fn hdr(len: usize) -> [u8; HDR_SIZE] {
    let mut h = [0u8; HDR_SIZE];
    h.copy_from_slice(RpmsgHdr::new(1024, PEER_ADDR, len as u16).as_bytes());
    h
}

/// What the device takes from the transmit queue.
fn device_takes(dev: &RingDevice) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    dev.receive(usize::MAX, &mut |f| got.push(f.to_vec()));
    got
}

#[test]
fn a_ring_loan_is_a_transmit_buffer_written_in_place_and_published_with_its_header() {
    let (link, dev) = ring_link();
    let free = link.tx_free();
    let mut loan = link.loan().unwrap();
    assert!(loan.is_shared());
    assert_eq!(loan.capacity(), MAX_PAYLOAD);
    assert_eq!((link.tx_free(), link.tx_loans()), (free - 1, 1));
    let payload: Vec<u8> = (0..MAX_PAYLOAD).map(|i| i as u8 ^ 0x5a).collect();
    loan.write(0, &payload).unwrap();
    loan.set_len(MAX_PAYLOAD).unwrap();
    link.send_loan(&hdr(MAX_PAYLOAD), loan).unwrap();
    assert_eq!(link.tx_loans(), 0);
    let got = device_takes(&dev);
    assert_eq!(got.len(), 1);
    let f = parse_frame(&got[0]).unwrap();
    assert_eq!((f.src, f.dst, f.len), (1024, PEER_ADDR, MAX_PAYLOAD));
    assert_eq!(f.payload(&got[0]), &payload[..]);
    // Published: the device's now (taken back lazily, when the free list runs dry).
    assert_eq!(link.tx_free(), free - 1);
}

#[test]
fn dropped_loans_come_back_and_loans_are_bounded() {
    let (link, dev) = ring_link();
    let free = link.tx_free();
    let mut loans = Vec::new();
    let err = loop {
        match link.loan() {
            Ok(l) => loans.push(l),
            Err(e) => break e,
        }
        assert!(loans.len() <= link.max_tx_loans(), "loans never ran out");
    };
    assert_eq!(err, LinkError::NoBuffer);
    assert_eq!(loans.len(), link.max_tx_loans());
    // Copying sends still find buffers: loans take at most a quarter.
    link.send(&hdr(0)).unwrap();
    assert_eq!(device_takes(&dev).len(), 1);
    drop(loans);
    assert_eq!(link.tx_loans(), 0);
    assert!(link.loan().is_ok());
    assert_eq!(link.tx_free() + 1, free);
}

#[test]
fn a_loan_outlives_a_link_reset_and_the_link_itself() {
    let (link, _dev) = ring_link();
    let mut loan = link.loan().unwrap();
    loan.write(0, b"late").unwrap();
    loan.set_len(4).unwrap();
    link.reset();
    // The reset takes back what the device held, not the loaned buffer.
    let free = link.tx_free();
    assert_eq!(free + 1, usize::from(link.queue_size()));
    let (e, mut loan) = link.send_loan(&hdr(4), loan).unwrap_err();
    assert_eq!(e, LinkError::Down);
    assert_eq!(loan.len(), 4);
    drop(link);
    // The memory is still there for the loan, and freed when it goes.
    loan.write(0, b"gone").unwrap();
    drop(loan);
}

#[test]
fn another_links_loan_is_refused_and_handed_back() {
    let (a, _da) = ring_link();
    let (b, _db) = ring_link();
    let mut loan = a.loan().unwrap();
    loan.set_len(3).unwrap();
    let (e, loan) = b.send_loan(&hdr(3), loan).unwrap_err();
    assert_eq!(e, LinkError::Unsupported);
    assert_eq!((loan.len(), a.tx_loans(), b.tx_loans()), (3, 1, 0));
    drop(loan);
    assert_eq!(a.tx_loans(), 0);
}

fn zero_copy_datagram_arrives<F: Fixture>(fx: &F) {
    let (d, peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    assert!(fx.transport().caps().zero_copy);
    let mut loan = d.loan(&ep).unwrap();
    loan.write(0, b"in place").unwrap();
    loan.set_len(8).unwrap();
    // A destination the protocol reserves: handed back.
    let (e, loan) = d.send_loan(&ep, 53, loan).unwrap_err();
    assert_eq!(e, Error::InvalidArgument);
    d.send_loan(&ep, peer.addr(), loan).unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    while got.is_empty() && start.elapsed() < std::time::Duration::from_secs(5) {
        got.extend(peer.take_received());
        std::thread::yield_now();
    }
    assert_eq!(got, vec![(ep.addr(), b"in place".to_vec())]);
    assert_eq!(d.datagram_stats().sent, 1);
    // After shutdown a loan is refused and an unsent one is handed back.
    let loan = d.loan(&ep).unwrap();
    fx.transport().shutdown().unwrap();
    assert_eq!(d.loan(&ep).err(), Some(Error::Shutdown));
    let (e, _loan) = d.send_loan(&ep, peer.addr(), loan).unwrap_err();
    assert_eq!(e, Error::Shutdown);
}

#[test]
fn zero_copy_datagrams_on_the_rings() {
    let fx = RpmsgRingFixture::setup(Completion::Interrupt);
    zero_copy_datagram_arrives(&fx);
}

#[test]
fn zero_copy_datagrams_on_the_queues() {
    let fx = RpmsgFixture::setup(Completion::Interrupt);
    zero_copy_datagram_arrives(&fx);
}
