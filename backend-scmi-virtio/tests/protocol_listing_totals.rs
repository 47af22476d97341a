//! Multi-part listings are held to their totals (docs/protocols/scmi.md §5): a listing that ends
//! before the announced number of entries arrived (a page with 0 returned and 0 remaining, or
//! "nothing remains" too early) is `Malformed::CountMismatch`, counted in `malformed_replies`,
//! never a shorter list. The simulated platform's `short_listings_from` quirk cuts its listings.

mod common;

use common::*;
use fwipc_scmi_virtio::platform::PlatformConfig;
use fwipc_scmi_virtio::protocol::{Malformed, ScmiError};

const MISMATCH: ScmiError = ScmiError::Malformed(Malformed::CountMismatch);

#[test]
fn empty_sensor_description_page_is_not_an_empty_list() {
    let mut pc = PlatformConfig::with_sensors(5);
    pc.quirks.short_listings_from = Some(0);
    let scmi = direct(pc);
    assert_eq!(scmi.sensor().attributes().unwrap().num_sensors, 5);
    let before = scmi.stats().malformed_replies;
    let mut seen = 0;
    assert_eq!(scmi.sensor().descriptions(|_| seen += 1), Err(MISMATCH));
    assert_eq!(seen, 0);
    assert_eq!(scmi.stats().malformed_replies, before + 1);
    // Announced axis count: an empty axis page is short too.
    let mut pc = PlatformConfig::full();
    pc.quirks.short_listings_from = Some(0);
    let scmi = direct(pc);
    assert_eq!(
        scmi.sensor().axis_descriptions_vec(2, Some(3)),
        Err(MISMATCH)
    );
}

#[test]
fn listings_cut_after_the_first_page_are_rejected() {
    // One entry per page; from index 1 on the platform answers (0 returned, 0 remaining) although
    // its first page said more remain (or PROTOCOL_ATTRIBUTES announced more).
    let mut pc = PlatformConfig::full();
    pc.quirks.max_entries_per_reply = 1;
    pc.quirks.short_listings_from = Some(1);
    let scmi = direct(pc);
    let before = scmi.stats().malformed_replies;
    assert_eq!(scmi.sensor().descriptions_vec(), Err(MISMATCH), "sensors");
    assert_eq!(
        scmi.sensor().axis_descriptions_vec(2, Some(3)),
        Err(MISMATCH),
        "axes, count announced"
    );
    assert_eq!(
        scmi.sensor().axis_descriptions_vec(2, None),
        Err(MISMATCH),
        "axes, count from the first page"
    );
    assert_eq!(
        scmi.clock().describe_rates(0, |_| {}),
        Err(MISMATCH),
        "clock rates"
    );
    assert_eq!(
        scmi.perf().describe_levels(0, |_| {}),
        Err(MISMATCH),
        "perf levels"
    );
    assert_eq!(
        scmi.voltage().describe_levels(0, |_| {}),
        Err(MISMATCH),
        "voltage levels"
    );
    assert_eq!(
        scmi.sensor().update_intervals(0, |_| {}),
        Err(MISMATCH),
        "update intervals"
    );
    // The protocol list's remaining count is derived from num_protocols, so a cut page is a
    // page that makes no progress.
    assert_eq!(
        scmi.base().protocols().map(|l| l.as_slice().len()),
        Err(ScmiError::Malformed(Malformed::NoProgress)),
        "protocols"
    );
    assert_eq!(scmi.stats().malformed_replies, before + 8);
    // Segmented descriptions are one page and unaffected.
    assert!(scmi.clock().describe_rates(1, |_| {}).is_ok());
}

#[test]
fn complete_listings_still_pass_one_entry_per_page() {
    let mut pc = PlatformConfig::full();
    pc.quirks.max_entries_per_reply = 1;
    let scmi = direct(pc);
    assert_eq!(
        scmi.clock().describe_rates(0, |_| {}).ok().map(|_| ()),
        Some(())
    );
    assert_eq!(scmi.perf().describe_levels(0, |_| {}), Ok(12));
    assert_eq!(
        scmi.sensor()
            .axis_descriptions_vec(2, None)
            .map(|v| v.len()),
        Ok(3)
    );
    assert_eq!(scmi.stats().malformed_replies, 0);
    // A sensor platform with no sensors lists none, and that is not an error.
    let scmi = direct(PlatformConfig::with_sensors(0));
    assert_eq!(scmi.sensor().descriptions_vec(), Ok(vec![]));
}
