//! Instance configuration and the region layout it implies: slot partitioning (`init_slots`,
//! docs/protocols/vchiq.md §1), the fragment pool and the pagelist area that follow the slots.

use crate::error::{Result, VchiqError};
use crate::wire::consts::{
    VCHIQ_MAX_FRAGMENTS, VCHIQ_MAX_SERVICES, VCHIQ_MAX_SLOTS, VCHIQ_MAX_SLOTS_PER_SIDE,
    VCHIQ_SLOT_SIZE, VCHIQ_SLOT_ZERO_SLOTS,
};
use fwipc_transport_api::Wait;

/// Which side of the protocol this instance plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The ARM: allocates the region, sends BULK_TX/RX with pagelists.
    Slave,
    /// The VideoCore: runs the bulk DMA (our simulator's role).
    Master,
}

/// Configuration of one instance. The layout fields are shared by both sides of one region (they
/// must agree, like the Pi firmware and driver agree on the cache-line size); [`Config::wait`] is
/// local.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Config {
    /// Slots in the region including slot zero (Pi: 65).
    pub total_slots: usize,
    /// Fragment cache-line size agreed with the firmware (64 on BCM2836/7/2711, 32 on BCM2835).
    pub cache_line_size: usize,
    /// Fragment buffers (≤ 64).
    pub num_fragments: usize,
    /// Pagelist buffers in the region (≤ 64): bulks in flight at once.
    pub num_pagelists: usize,
    /// Bytes per pagelist (header + addresses); bounds the pages of one bulk.
    pub pagelist_size: usize,
    /// Ports (services) supported, ≤ 4096.
    pub max_services: usize,
    /// Client id sent in OPEN (the ARM sends its pid; must be non-zero).
    pub client_id: i32,
    /// Downstream Pi 4 "36-bit" pagelists (docs/protocols/vchiq.md §5): entry = ((addr >> 4) &
    /// !0xFF) | (pages − 1), at most 256 pages per entry, so bulk buffers may sit anywhere in 64
    /// GiB. Both sides must agree (like the cache-line size). Default off (the classic 32-bit
    /// format).
    pub pagelist_addr36: bool,
    /// How the blocking calls ([`crate::Vchiq::open_service_wait`],
    /// [`crate::Vchiq::queue_message_wait`], [`crate::Vchiq::wait_bulk`],
    /// [`crate::Vchiq::shutdown`]) pause between two polls of the instance: `Wait::Poll` (the
    /// default: busy-poll, no scheduler needed), `Wait::SpinThenYield` with a relax step
    /// (`std::thread::yield_now`, `wfe`), or `Wait::Completion` with a parker (parked for at most
    /// [`crate::WAIT_NAP`] per round). The same [`Wait`] every fwipc API takes; `'static`
    /// because the instance keeps it. Their deadlines run on the instance's
    /// [`fwipc_transport_api::Clock`].
    pub wait: Wait<'static>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            total_slots: 65,
            cache_line_size: crate::wire::consts::DEFAULT_CACHE_LINE_SIZE,
            num_fragments: VCHIQ_MAX_FRAGMENTS,
            num_pagelists: 32,
            pagelist_size: 2048,
            max_services: 64,
            client_id: 1,
            pagelist_addr36: false,
            wait: Wait::Poll,
        }
    }
}

/// One side's slot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Partition {
    /// The synchronous slot.
    pub sync: u32,
    /// First data slot.
    pub first: u32,
    /// Last data slot (inclusive).
    pub last: u32,
}

impl Partition {
    /// Number of data slots.
    pub fn data_slots(&self) -> u32 {
        self.last - self.first + 1
    }
    /// Whether `slot` is one of this side's data slots.
    pub fn owns_data(&self, slot: u32) -> bool {
        (self.first..=self.last).contains(&slot)
    }
}

impl Config {
    /// This configuration with `wait` as the blocking calls' way of waiting.
    pub const fn with_wait(mut self, wait: Wait<'static>) -> Self {
        self.wait = wait;
        self
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result {
        let n = self.total_slots.wrapping_sub(VCHIQ_SLOT_ZERO_SLOTS);
        let cl = self.cache_line_size;
        let ok = self.total_slots > VCHIQ_SLOT_ZERO_SLOTS
            && n >= 4
            && self.total_slots <= VCHIQ_MAX_SLOTS
            && n / 2 - 1 <= VCHIQ_MAX_SLOTS_PER_SIDE
            && cl.is_power_of_two()
            && (8..=256).contains(&cl)
            && self.num_fragments <= 64
            && (1..=64).contains(&self.num_pagelists)
            && self.pagelist_size >= 16
            && self.pagelist_size.is_multiple_of(8)
            && (2..=VCHIQ_MAX_SERVICES).contains(&self.max_services)
            && self.client_id != 0;
        if ok {
            Ok(())
        } else {
            Err(VchiqError::Invalid)
        }
    }

    /// The partition of `role` (docs/protocols/vchiq.md §1 "Partitioning").
    pub fn partition(&self, role: Role) -> Partition {
        let n = (self.total_slots - VCHIQ_SLOT_ZERO_SLOTS) as u32;
        match role {
            Role::Master => Partition {
                sync: 1,
                first: 2,
                last: n / 2,
            },
            Role::Slave => Partition {
                sync: 1 + n / 2,
                first: 2 + n / 2,
                last: n,
            },
        }
    }

    /// Region offset of the fragment pool.
    pub fn fragments_offset(&self) -> usize {
        self.total_slots * VCHIQ_SLOT_SIZE
    }

    /// Bytes per fragment (head line + tail line).
    pub fn fragment_size(&self) -> usize {
        2 * self.cache_line_size
    }

    /// Region offset of the pagelist area.
    pub fn pagelists_offset(&self) -> usize {
        (self.fragments_offset() + self.num_fragments * self.fragment_size() + 63) & !63
    }

    /// Total region size (rounded to a page).
    pub fn region_size(&self) -> usize {
        let end = self.pagelists_offset() + self.num_pagelists * self.pagelist_size;
        (end + VCHIQ_SLOT_SIZE - 1) & !(VCHIQ_SLOT_SIZE - 1)
    }

    /// Largest bulk we accept: the pages a pagelist can name if none merge.
    pub fn max_bulk_size(&self) -> usize {
        let entries = (self.pagelist_size - 8) / 4;
        (entries - 1) * VCHIQ_SLOT_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_partition() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(
            c.partition(Role::Master),
            Partition {
                sync: 1,
                first: 2,
                last: 32
            }
        );
        assert_eq!(
            c.partition(Role::Slave),
            Partition {
                sync: 33,
                first: 34,
                last: 64
            }
        );
        assert_eq!(c.partition(Role::Slave).data_slots(), 31);
        assert_eq!(c.fragments_offset(), 266_240);
        assert!(c.region_size() >= c.pagelists_offset() + 32 * 2048);
    }

    #[test]
    fn rejects_bad() {
        let c = Config {
            total_slots: 4,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            cache_line_size: 48,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            client_id: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
