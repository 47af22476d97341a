//! Entry points for the fuzz targets (`fuzz/`): one per parser of remote input. Each must return
//! normally for any input.

use crate::addr::BUF_SIZE;
use crate::node::Node;
use crate::role::Role;

/// `parse_frame` on arbitrary bytes, and the payload view of what it accepts.
pub fn frame(data: &[u8]) {
    if let Ok(f) = crate::frame::parse_frame(data) {
        assert!(crate::addr::HDR_SIZE + f.len <= data.len());
        let _ = f.payload(data);
    }
}

/// `parse_ns` on arbitrary bytes; an accepted announcement re-encodes to the same fields.
pub fn ns_msg(data: &[u8]) {
    if let Ok(a) = crate::frame::parse_ns(data) {
        let m = crate::frame::ns_payload(&a);
        assert_eq!(
            crate::frame::parse_ns(zerocopy::IntoBytes::as_bytes(&m)),
            Ok(a)
        );
    }
}

/// A node of either role fed a sequence of frames (split on the first byte of each chunk as its
/// length): the endpoint and service tables stay within capacity, nothing panics.
pub fn node_session(data: &[u8]) {
    let role = if data.first().is_some_and(|b| b & 1 == 1) {
        Role::Device
    } else {
        Role::Driver
    };
    let mut node = Node::new(role, 4, 4, true);
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut budget = 256;
    while let Some((&n, tail)) = rest.split_first() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let n = (n as usize * 4).min(tail.len()).min(BUF_SIZE + 8);
        let (frame, tail) = tail.split_at(n);
        let _ = node.receive(frame);
        rest = tail;
    }
}
