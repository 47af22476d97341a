//! The loopback transport acts on `Transport::spinning`: its remote raises no interrupt while a
//! caller spins, and the last spinner takes what arrived meanwhile.

use super::LoopbackFixture;
use crate::scenarios::spinning_holds_interrupts;
use crate::Verdict;

#[test]
fn no_interrupt_while_a_caller_spins() {
    assert_eq!(
        spinning_holds_interrupts::<LoopbackFixture>(),
        Verdict::Pass
    );
}
