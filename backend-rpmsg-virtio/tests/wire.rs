//! The rpmsg wire codecs: layout against hand-written little-endian bytes, round-trips, and
//! hostile input that must come back as a typed error.

use fwipc_rpmsg_virtio::addr::{ADDR_ANY, BUF_SIZE, HDR_SIZE, MAX_PAYLOAD, NS_ADDR};
use fwipc_rpmsg_virtio::frame::{ns_payload, parse_frame, parse_ns, write_frame, NsAnnounce};
use fwipc_rpmsg_virtio::name::Name;
use fwipc_rpmsg_virtio::node::{Delivery, Node};
use fwipc_rpmsg_virtio::role::Role;
use fwipc_rpmsg_virtio::{RpmsgError, WireError};
use proptest::prelude::*;
use zerocopy::IntoBytes;

#[test]
fn header_bytes_are_little_endian_in_linux_order() {
    let mut b = [0u8; 20];
    let n = write_frame(&mut b, 0x0102_0304, 0x0a0b_0c0d, &[9, 8, 7, 6]).unwrap();
    assert_eq!(n, 20);
    assert_eq!(
        &b[..16],
        &[4, 3, 2, 1, 0xd, 0xc, 0xb, 0xa, 0, 0, 0, 0, 4, 0, 0, 0]
    );
    assert_eq!(&b[16..], &[9, 8, 7, 6]);
}

#[test]
fn ns_message_bytes() {
    let a = NsAnnounce {
        name: Name::new(b"rpmsg-echo").unwrap(),
        addr: 0x400,
        destroy: true,
    };
    let m = ns_payload(&a);
    let b = m.as_bytes();
    assert_eq!(b.len(), 40);
    assert_eq!(&b[..11], b"rpmsg-echo\0");
    assert!(b[11..32].iter().all(|&x| x == 0));
    assert_eq!(&b[32..], &[0, 4, 0, 0, 1, 0, 0, 0]);
}

#[test]
fn hostile_frames_are_typed_errors() {
    assert_eq!(parse_frame(&[0; 15]), Err(WireError::Truncated));
    assert_eq!(parse_frame(&[0; BUF_SIZE + 1]), Err(WireError::BadLength));
    let mut b = [0u8; 32];
    write_frame(&mut b, 1, 2, &[0; 16]).unwrap();
    // A length one past what the buffer holds.
    assert_eq!(parse_frame(&b[..31]), Err(WireError::BadLength));
    assert!(parse_frame(&b).is_ok());
    assert_eq!(
        write_frame(&mut [0u8; BUF_SIZE], 1, 2, &[0; MAX_PAYLOAD + 1]),
        Err(WireError::TooLarge)
    );
}

fn ns_bytes(name: &[u8; 32], addr: u32, flags: u32) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[..32].copy_from_slice(name);
    b[32..36].copy_from_slice(&addr.to_le_bytes());
    b[36..].copy_from_slice(&flags.to_le_bytes());
    b
}

#[test]
fn hostile_ns_messages_are_typed_errors() {
    let mut good = [0u8; 32];
    good[..4].copy_from_slice(b"echo");
    assert!(parse_ns(&ns_bytes(&good, 1024, 0)).is_ok());
    assert_eq!(
        parse_ns(&ns_bytes(&good, 1024, 0)[..39]),
        Err(WireError::Truncated)
    );
    assert_eq!(
        parse_ns(&ns_bytes(&good, 1024, 2)),
        Err(WireError::BadNsFlags)
    );
    assert_eq!(
        parse_ns(&ns_bytes(&good, ADDR_ANY, 0)),
        Err(WireError::BadNsAddr)
    );
    assert_eq!(
        parse_ns(&ns_bytes(&good, NS_ADDR, 0)),
        Err(WireError::BadNsAddr)
    );
    assert_eq!(
        parse_ns(&ns_bytes(&[b'x'; 32], 1024, 0)),
        Err(WireError::BadName)
    );
    assert_eq!(
        parse_ns(&ns_bytes(&[0; 32], 1024, 0)),
        Err(WireError::BadName)
    );
}

/// A node learns and forgets a service through name-service frames, as the peer sends them.
#[test]
fn node_applies_announce_and_destroy() {
    let mut peer = Node::new(Role::Device, 2, 2, true);
    let mut host = Node::new(Role::Driver, 2, 2, true);
    let addr = peer.bind(Name::new(b"echo").unwrap(), ADDR_ANY).unwrap();
    let mut f = [0u8; BUF_SIZE];
    let n = peer.announce(addr, false, &mut f).unwrap().unwrap();
    assert!(matches!(host.receive(&f[..n]), Ok(Delivery::NameService(a)) if !a.destroy));
    assert_eq!(
        host.services().lookup(&Name::new(b"echo").unwrap()),
        Some(addr)
    );
    let n = peer.announce(addr, true, &mut f).unwrap().unwrap();
    assert!(matches!(host.receive(&f[..n]), Ok(Delivery::NameService(a)) if a.destroy));
    assert_eq!(host.services().lookup(&Name::new(b"echo").unwrap()), None);
    // A second destroy is stale.
    assert_eq!(host.receive(&f[..n]), Err(RpmsgError::NotBound));
    // Without the feature, nothing is announced and announcements are refused.
    let quiet = Node::new(Role::Device, 1, 1, false);
    assert_eq!(quiet.announce(addr, false, &mut f), Ok(None));
    let mut deaf = Node::new(Role::Driver, 1, 1, false);
    assert_eq!(deaf.receive(&f[..n]), Err(RpmsgError::NotBound));
}

#[test]
fn roles_use_opposite_queues() {
    assert_eq!(Role::Driver.rx_queue(), 0);
    assert_eq!(Role::Driver.tx_queue(), 1);
    assert_eq!(Role::Device.rx_queue(), Role::Driver.tx_queue());
    assert_eq!(Role::Device.tx_queue(), Role::Driver.rx_queue());
}

proptest! {
    #[test]
    fn frame_round_trips(src: u32, dst: u32, payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)) {
        let mut b = [0u8; BUF_SIZE];
        let n = write_frame(&mut b, src, dst, &payload).unwrap();
        prop_assert_eq!(n, HDR_SIZE + payload.len());
        let f = parse_frame(&b[..n]).unwrap();
        prop_assert_eq!((f.src, f.dst, f.len), (src, dst, payload.len()));
        prop_assert_eq!(f.payload(&b[..n]), &payload[..]);
    }

    #[test]
    fn ns_round_trips(name in "[a-z0-9-]{1,31}", addr in 0u32..0xFFFF_FFFE, destroy: bool) {
        prop_assume!(addr != NS_ADDR);
        let a = NsAnnounce { name: Name::new(name.as_bytes()).unwrap(), addr, destroy };
        prop_assert_eq!(parse_ns(ns_payload(&a).as_bytes()), Ok(a));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(f) = parse_frame(&b) {
            prop_assert!(HDR_SIZE + f.len <= b.len());
        }
        let _ = parse_ns(&b);
        let mut node = Node::new(Role::Driver, 2, 2, true);
        let _ = node.receive(&b);
    }
}
