//! Configuration of the simulated platform: which protocols exist, their objects, and the test
//! knobs (quirks) that make it misbehave on purpose.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

/// A simulated sensor.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    /// Name (cut to 15 bytes on the wire).
    pub name: String,
    /// Axes (0 = scalar sensor).
    pub axes: u8,
    /// SCMI unit code (e.g. 2 = °C, 89 = m/s²).
    pub unit: u8,
    /// Signed decimal exponent of the unit (attributes_high bits 15:11, -16..=15): a reading
    /// `v` means `v × 10^unit_exponent` units (e.g. -3 with °C: millidegrees).
    pub unit_exponent: i8,
    /// Advertise and implement asynchronous reads (delayed response; needs P2A channels).
    pub async_read: bool,
    /// Advertise continuous-update notifications.
    pub continuous_notify: bool,
    /// Enabled at start (vhost-device-scmi sensors start disabled and refuse readings).
    pub enabled: bool,
    /// Base value; axis `i` reads `value + counter + 100·i`, where `counter` is a wrapping u8
    /// starting at 0 and bumped after each read (the vhost-device-scmi `fake` sensor pattern,
    /// with value 0).
    pub value: i64,
    /// Every reading is exactly `value` (+ 100·i for axis `i`): no counter is added.
    pub constant: bool,
    /// Timestamped readings (timestamp = read count).
    pub timestamped: bool,
    /// Send extended attributes (v3: power, and resolution + range for scalar sensors).
    pub extended: bool,
    /// Trip points.
    pub trip_points: u8,
    /// Update intervals for SENSOR_LIST_UPDATE_INTERVALS (raw interval words: seconds in bits
    /// 15:5, signed decimal exponent in 4:0). Empty: the message answers NOT_SUPPORTED.
    pub update_intervals: Vec<u32>,
}

impl SensorConfig {
    /// A scalar sensor, enabled, value `value`.
    pub fn scalar(name: &str, unit: u8, value: i64) -> Self {
        SensorConfig {
            name: name.to_string(),
            axes: 0,
            unit,
            unit_exponent: 0,
            async_read: false,
            continuous_notify: true,
            enabled: true,
            value,
            constant: false,
            timestamped: false,
            extended: false,
            trip_points: 0,
            update_intervals: Vec::new(),
        }
    }

    /// vhost-device-scmi's `fake` accelerometer: 3 axes, unit 89, disabled until enabled.
    pub fn fake_accelerometer(name: &str) -> Self {
        SensorConfig {
            name: name.to_string(),
            axes: 3,
            unit: 89,
            unit_exponent: 0,
            async_read: false,
            continuous_notify: true,
            enabled: false,
            value: 0,
            constant: false,
            timestamped: false,
            extended: false,
            trip_points: 0,
            update_intervals: Vec::new(),
        }
    }
}

/// Rates a clock supports.
#[derive(Debug, Clone)]
pub enum ClockRates {
    /// Discrete rates in Hz.
    Discrete(Vec<u64>),
    /// A linear range (min, max, step) in Hz.
    Range {
        /// Lowest.
        min: u64,
        /// Highest.
        max: u64,
        /// Step.
        step: u64,
    },
}

/// A simulated clock.
#[derive(Debug, Clone)]
pub struct ClockConfig {
    /// Name.
    pub name: String,
    /// Supported rates.
    pub rates: ClockRates,
    /// Initial rate.
    pub rate: u64,
    /// Enabled at start.
    pub enabled: bool,
}

/// A simulated performance domain.
#[derive(Debug, Clone)]
pub struct PerfDomainConfig {
    /// Name.
    pub name: String,
    /// Levels: (perf, power, latency_us).
    pub levels: Vec<(u32, u32, u16)>,
    /// Initial level.
    pub level: u32,
    /// Sustained frequency in kHz.
    pub sustained_freq_khz: u32,
}

/// A simulated power domain.
#[derive(Debug, Clone)]
pub struct PowerDomainConfig {
    /// Name.
    pub name: String,
    /// Initial state (generic ON 0, OFF 0x4000_0000).
    pub state: u32,
}

/// A simulated reset domain.
#[derive(Debug, Clone)]
pub struct ResetDomainConfig {
    /// Name.
    pub name: String,
    /// Supports asynchronous resets (delayed response; needs P2A channels).
    pub async_reset: bool,
    /// Latency in µs (`u32::MAX` unknown).
    pub latency_us: u32,
}

/// Levels a voltage domain supports.
#[derive(Debug, Clone)]
pub enum VoltageLevels {
    /// Discrete levels in µV.
    Discrete(Vec<i32>),
    /// Segmented (min, max, step) in µV.
    Range {
        /// Lowest.
        min: i32,
        /// Highest.
        max: i32,
        /// Step.
        step: i32,
    },
}

/// A simulated voltage domain.
#[derive(Debug, Clone)]
pub struct VoltageDomainConfig {
    /// Name.
    pub name: String,
    /// Supported levels.
    pub levels: VoltageLevels,
    /// Initial level in µV.
    pub level: i32,
    /// Supports asynchronous level set.
    pub async_set: bool,
}

/// Deliberate misbehaviour, for tests of the agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quirks {
    /// Multi-part replies claim `remaining >= 1` forever (a platform bug the agent's bounded
    /// loops must survive, docs/protocols/scmi.md §8 item 7).
    pub remaining_forever: bool,
    /// Never paginate: a reply that does not fit becomes COMMS_ERROR (vhost-device-scmi 0.4).
    pub no_pagination: bool,
    /// At most this many entries per multi-part reply (0 = as many as fit).
    pub max_entries_per_reply: usize,
    /// Append an extra word after the status of SENSOR_CONTINUOUS_UPDATE_NOTIFY (what
    /// vhost-device-scmi does, docs/protocols/scmi.md §6; **(unverified)** against DEN0056).
    pub notify_reply_extra_word: bool,
    /// Pack DISCOVER_LIST_PROTOCOLS into word `i % 4` instead of `i / 4` (vhost-device-scmi's
    /// packing defect).
    pub list_protocols_bad_packing: bool,
    /// Multi-part listings stop early: a page requested at this start index or later answers
    /// 0 returned and 0 remaining although entries are left (`Some(0)`: every listing is empty
    /// even where PROTOCOL_ATTRIBUTES announced entries). DISCOVER_LIST_PROTOCOLS answers a count
    /// of 0. Segmented descriptions are not affected.
    pub short_listings_from: Option<usize>,
}

/// Configuration of a [`super::Platform`].
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// DISCOVER_VENDOR.
    pub vendor: String,
    /// DISCOVER_SUB_VENDOR (`None`: NOT_SUPPORTED).
    pub sub_vendor: Option<String>,
    /// DISCOVER_IMPLEMENTATION_VERSION.
    pub implementation_version: u32,
    /// Agents for DISCOVER_AGENT (agent 0 is the platform and is implied). Empty: DISCOVER_AGENT
    /// answers NOT_SUPPORTED, as vhost-device-scmi does.
    pub agents: Vec<String>,
    /// Base PROTOCOL_VERSION.
    pub base_version: u32,
    /// Sensor PROTOCOL_VERSION (0x30000 = v3 with 16-byte readings; 0x20000 = 8-byte readings).
    pub sensor_version: u32,
    /// Sensors (the sensor protocol exists if this is non-empty or `sensor_protocol` is set).
    pub sensors: Vec<SensorConfig>,
    /// Offer the sensor protocol even without sensors.
    pub sensor_protocol: bool,
    /// Clocks (protocol 0x14 exists if non-empty).
    pub clocks: Vec<ClockConfig>,
    /// Performance domains (0x13 exists if non-empty).
    pub perf_domains: Vec<PerfDomainConfig>,
    /// Power domains (0x11 exists if non-empty).
    pub power_domains: Vec<PowerDomainConfig>,
    /// Reset domains (0x16 exists if non-empty).
    pub reset_domains: Vec<ResetDomainConfig>,
    /// Voltage domains (0x17 exists if non-empty).
    pub voltage_domains: Vec<VoltageDomainConfig>,
    /// System power protocol (0x12).
    pub system_power: bool,
    /// The fwipc test protocol (0x81: ECHO).
    pub test_protocol: bool,
    /// Extra protocol ids (vendor range or unimplemented standard ids) that answer only the
    /// three common messages; listed by DISCOVER_LIST_PROTOCOLS after the others. Ids this
    /// platform implements, Base, and duplicates are ignored.
    pub extra_protocols: Vec<u8>,
    /// P2A channels negotiated: without them notifications and delayed responses are refused
    /// (NOT_SUPPORTED) and hidden from PROTOCOL_MESSAGE_ATTRIBUTES (docs/protocols/scmi.md §1.1).
    pub p2a: bool,
    /// Pending P2A messages kept; further notifications are dropped (counted), further
    /// asynchronous commands answered BUSY.
    pub p2a_capacity: usize,
    /// Misbehaviour knobs.
    pub quirks: Quirks,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            vendor: "fwipc".to_string(),
            sub_vendor: Some("sim".to_string()),
            implementation_version: 0x0001_0000,
            agents: vec!["OSPM".to_string()],
            base_version: 0x20000,
            sensor_version: 0x30000,
            sensors: Vec::new(),
            sensor_protocol: false,
            clocks: Vec::new(),
            perf_domains: Vec::new(),
            power_domains: Vec::new(),
            reset_domains: Vec::new(),
            voltage_domains: Vec::new(),
            system_power: false,
            test_protocol: true,
            extra_protocols: Vec::new(),
            p2a: true,
            p2a_capacity: 64,
            quirks: Quirks::default(),
        }
    }
}

impl PlatformConfig {
    /// Shaped like vhost-device-scmi 0.4 with `fake_sensors` `fake` accelerometers: Base v2.0
    /// ("rust-vmm", implementation version 0, no sub-vendor, no agents) and Sensor v3.0 only.
    /// (Unlike the daemon it paginates and packs the protocol list correctly; set the quirks to
    /// copy its defects.)
    pub fn vhost_device_scmi_like(fake_sensors: usize) -> Self {
        PlatformConfig {
            vendor: "rust-vmm".to_string(),
            sub_vendor: None,
            implementation_version: 0,
            agents: Vec::new(),
            sensors: (0..fake_sensors)
                .map(|i| {
                    SensorConfig::fake_accelerometer(&if i == 0 {
                        "fake".to_string()
                    } else {
                        alloc::format!("fake{i}")
                    })
                })
                .collect(),
            sensor_protocol: true,
            test_protocol: false,
            ..PlatformConfig::default()
        }
    }

    /// Every protocol this crate implements, with a few objects each, plus the test protocol.
    pub fn full() -> Self {
        let mut s0 = SensorConfig::scalar("cpu_temp", 2, 45_000);
        s0.async_read = true;
        s0.extended = true;
        s0.timestamped = true;
        s0.trip_points = 2;
        // 1 ms .. 2 s, as (seconds << 5) | exponent (exponent -3 = 0x1D in 5 bits).
        s0.update_intervals = [1u32, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
            .iter()
            .map(|ms| (ms << 5) | 0x1D)
            .collect();
        PlatformConfig {
            sensors: vec![
                s0,
                SensorConfig::scalar("gpu_temp", 2, 50_000),
                SensorConfig::fake_accelerometer("accel"),
            ],
            sensor_protocol: true,
            clocks: vec![
                ClockConfig {
                    name: "cpu_clk".to_string(),
                    rates: ClockRates::Discrete(vec![
                        100_000_000,
                        200_000_000,
                        400_000_000,
                        800_000_000,
                        1_200_000_000,
                        5_000_000_000,
                    ]),
                    rate: 400_000_000,
                    enabled: true,
                },
                ClockConfig {
                    name: "uart_clk".to_string(),
                    rates: ClockRates::Range {
                        min: 1_000_000,
                        max: 48_000_000,
                        step: 1_000_000,
                    },
                    rate: 24_000_000,
                    enabled: false,
                },
            ],
            perf_domains: vec![PerfDomainConfig {
                name: "big".to_string(),
                levels: (1..=12).map(|i| (i * 100, i * 150, 30)).collect(),
                level: 600,
                sustained_freq_khz: 1_800_000,
            }],
            power_domains: vec![
                PowerDomainConfig {
                    name: "gpu_pd".to_string(),
                    state: crate::protocol::ids::power::STATE_OFF,
                },
                PowerDomainConfig {
                    name: "vpu_pd".to_string(),
                    state: crate::protocol::ids::power::STATE_ON,
                },
            ],
            reset_domains: vec![
                ResetDomainConfig {
                    name: "eth_rst".to_string(),
                    async_reset: true,
                    latency_us: 10,
                },
                ResetDomainConfig {
                    name: "usb_rst".to_string(),
                    async_reset: false,
                    latency_us: u32::MAX,
                },
            ],
            voltage_domains: vec![
                VoltageDomainConfig {
                    name: "vdd_cpu".to_string(),
                    levels: VoltageLevels::Discrete(vec![
                        -50_000, 800_000, 850_000, 900_000, 950_000, 1_000_000,
                    ]),
                    level: 900_000,
                    async_set: true,
                },
                VoltageDomainConfig {
                    name: "vdd_io".to_string(),
                    levels: VoltageLevels::Range {
                        min: 1_650_000,
                        max: 3_600_000,
                        step: 50_000,
                    },
                    level: 1_800_000,
                    async_set: false,
                },
            ],
            system_power: true,
            ..PlatformConfig::default()
        }
    }

    /// Only `n` scalar sensors (for pagination tests) and the test protocol.
    pub fn with_sensors(n: usize) -> Self {
        PlatformConfig {
            sensors: (0..n)
                .map(|i| SensorConfig::scalar(&alloc::format!("s{i}"), 2, i as i64 * 1000))
                .collect(),
            sensor_protocol: true,
            ..PlatformConfig::default()
        }
    }
}
