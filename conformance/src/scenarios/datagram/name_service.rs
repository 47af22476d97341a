//! The name service through the datagram API.

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, EndpointEvent, EndpointName, Transport};

use super::pair;
use crate::scenarios::Verdict;
use crate::util::eventually;

/// The name service: a remote announce and destroy appear as [`EndpointEvent`]s, and binding and
/// unbinding a named local endpoint announces its creation and destruction to the remote.
pub fn name_service<F: Fixture>() -> Verdict {
    let fx = F::setup(F::modes()[0]);
    let caps = fx.transport().caps();
    if !caps.name_service {
        return Verdict::NotApplicable("no name service (Caps::name_service)");
    }
    let (d, peer) = pair(&fx);
    let remote = EndpointName::new(b"fwipc-remote-svc").expect("valid name");
    let local = EndpointName::new(b"fwipc-local-svc").expect("valid name");
    while d.next_event().is_some() {}

    let next = |want: EndpointEvent| {
        let mut seen = Vec::new();
        let ok = eventually(fx.reply_timeout(), || {
            if let Some(ev) = d.next_event() {
                seen.push(ev);
            }
            seen.contains(&want)
        });
        assert!(ok, "{}: expected {want:?}, saw {seen:?}", F::NAME);
    };
    let raddr = peer
        .announce(remote.as_bytes())
        .unwrap_or_else(|| panic!("{}: the remote cannot announce", F::NAME));
    next(EndpointEvent::Announced {
        name: remote,
        addr: raddr,
    });

    let _ = peer.take_announcements();
    let ep = d
        .bind(Bind::Name(local.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: bind by name failed: {e}", F::NAME));
    let addr = ep.addr();
    let mut ann = Vec::new();
    let ok = eventually(fx.reply_timeout(), || {
        ann.extend(peer.take_announcements());
        ann.contains(&(local, addr, false))
    });
    assert!(ok, "{}: bind not announced: {ann:?}", F::NAME);
    d.unbind(ep)
        .unwrap_or_else(|e| panic!("{}: unbind failed: {e}", F::NAME));
    let ok = eventually(fx.reply_timeout(), || {
        ann.extend(peer.take_announcements());
        ann.contains(&(local, addr, true))
    });
    assert!(ok, "{}: unbind not announced: {ann:?}", F::NAME);

    assert!(
        peer.destroy(raddr),
        "{}: the remote cannot destroy",
        F::NAME
    );
    next(EndpointEvent::Destroyed {
        name: remote,
        addr: raddr,
    });
    Verdict::Pass
}
