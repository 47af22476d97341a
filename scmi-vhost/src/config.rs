//! The daemon's TOML configuration file and its mapping onto the platform model's
//! [`PlatformConfig`]. The schema is documented, with an example, in the crate README.
//!
//! Every error names the file; parse errors (bad TOML, an unknown key, a wrong type) carry the
//! line and column `toml` reports, and errors found after parsing (an initial rate that is not
//! one of the rates, an empty list, a name too long) carry the line of the table they are about.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fwipc_scmi_virtio::platform::{
    ClockConfig, ClockRates, PerfDomainConfig, PlatformConfig, PowerDomainConfig,
    ResetDomainConfig, SensorConfig, VoltageDomainConfig, VoltageLevels,
};
use serde::Deserialize;
use toml::Spanned;

/// Longest name on the wire: 15 bytes in the 16-byte fields (vendor, sub-vendor, agents,
/// sensors), 63 in the 64-byte extended names (`*_NAME_GET`) of clocks and domains.
const SHORT_NAME_MAX: usize = 15;
const LONG_NAME_MAX: usize = 63;
/// At most this many objects of one kind (far below the protocols' 16-bit counts; a bound on
/// what a configuration can make the daemon allocate).
const OBJECTS_MAX: usize = 1024;
/// At most this many rates or levels per clock, performance or voltage domain.
const LEVELS_MAX: usize = 4096;

/// What the configuration file describes: the platform, and how the daemon drives it.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The platform model's configuration.
    pub platform: PlatformConfig,
    /// Period of SENSOR_UPDATE notifications for sensors whose continuous updates the agent
    /// enabled (`None`: never).
    pub sensor_update: Option<Duration>,
}

/// A configuration file that could not be used.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    line: Option<usize>,
    msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.path.display(), l, self.msg),
            None => write!(f, "{}: {}", self.path.display(), self.msg),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A range of values: lowest, highest, step (`{ min = .., max = .., step = .. }`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeToml<T> {
    min: T,
    max: T,
    step: T,
}

/// A sensor unit: a name from [`UNITS`] or the SCMI unit code.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum UnitToml {
    Code(u8),
    Name(String),
}

/// Unit names the file may use, with their SCMI codes (DEN0056, sensor unit types).
const UNITS: &[(&str, u8)] = &[
    ("none", 0),
    ("unspecified", 1),
    ("celsius", 2),
    ("fahrenheit", 3),
    ("kelvin", 4),
    ("volts", 5),
    ("amps", 6),
    ("watts", 7),
    ("joules", 8),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorToml {
    name: String,
    unit: UnitToml,
    #[serde(default)]
    unit_exponent: i8,
    value: i64,
    #[serde(default)]
    drift: bool,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    async_read: bool,
    #[serde(default = "yes")]
    notify: bool,
    #[serde(default)]
    timestamped: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockToml {
    name: String,
    rates_hz: Option<Vec<u64>>,
    range_hz: Option<RangeToml<u64>>,
    rate_hz: Option<u64>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerfToml {
    name: String,
    levels: Vec<u32>,
    power: Option<Vec<u32>>,
    #[serde(default)]
    latency_us: u16,
    level: Option<u32>,
    sustained_freq_khz: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PowerStateToml {
    Raw(u32),
    Named(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerToml {
    name: String,
    state: Option<PowerStateToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetToml {
    name: String,
    latency_us: Option<u32>,
    #[serde(default, rename = "async")]
    asynchronous: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoltageToml {
    name: String,
    levels_uv: Option<Vec<i32>>,
    range_uv: Option<RangeToml<i32>>,
    level_uv: Option<i32>,
    #[serde(default, rename = "async")]
    asynchronous: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    vendor: String,
    sub_vendor: Option<String>,
    #[serde(default = "default_implementation_version")]
    implementation_version: u32,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default = "yes")]
    system_power: bool,
    #[serde(default = "default_p2a_capacity")]
    p2a_capacity: usize,
    #[serde(default)]
    sensor_update_ms: u32,
    #[serde(default)]
    sensors: Vec<Spanned<SensorToml>>,
    #[serde(default)]
    clocks: Vec<Spanned<ClockToml>>,
    #[serde(default)]
    perf_domains: Vec<Spanned<PerfToml>>,
    #[serde(default)]
    power_domains: Vec<Spanned<PowerToml>>,
    #[serde(default)]
    reset_domains: Vec<Spanned<ResetToml>>,
    #[serde(default)]
    voltage_domains: Vec<Spanned<VoltageToml>>,
}

fn yes() -> bool {
    true
}

fn default_implementation_version() -> u32 {
    0x0001_0000
}

fn default_p2a_capacity() -> usize {
    64
}

/// Read and check `path`.
pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: None,
        msg: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parse and check the text of a configuration file (`path` only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
    let file: FileToml = toml::from_str(text).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        msg: e.message().trim_end().to_string(),
    })?;
    let mut cx = Checker {
        path,
        text,
        line: None,
    };
    cx.build(file)
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()
        .get(..at)
        .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
        + 1
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    line: Option<usize>,
}

impl Checker<'_> {
    fn err(&self, msg: String) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: self.line,
            msg,
        }
    }

    fn at<T>(&mut self, item: &Spanned<T>) {
        self.line = Some(line_of(self.text, item.span().start));
    }

    fn name(&self, what: &str, name: &str, max: usize) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(self.err(format!("{what}: the name is empty")));
        }
        if name.len() > max {
            return Err(self.err(format!(
                "{what}: name {name:?} is {} bytes, at most {max} fit the wire",
                name.len()
            )));
        }
        if name.contains('\0') {
            return Err(self.err(format!("{what}: name {name:?} contains a NUL byte")));
        }
        Ok(())
    }

    fn count<T>(&self, what: &str, v: &[T]) -> Result<(), ConfigError> {
        if v.len() > OBJECTS_MAX {
            return Err(self.err(format!("{} {what}, at most {OBJECTS_MAX}", v.len())));
        }
        Ok(())
    }

    fn levels<T>(&self, what: &str, v: &[T]) -> Result<(), ConfigError> {
        if v.is_empty() {
            return Err(self.err(format!("{what} is empty")));
        }
        if v.len() > LEVELS_MAX {
            return Err(self.err(format!(
                "{what} has {} entries, at most {LEVELS_MAX}",
                v.len()
            )));
        }
        Ok(())
    }

    fn build(&mut self, f: FileToml) -> Result<DaemonConfig, ConfigError> {
        self.name("vendor", &f.vendor, SHORT_NAME_MAX)?;
        if let Some(s) = &f.sub_vendor {
            self.name("sub_vendor", s, SHORT_NAME_MAX)?;
        }
        for (i, a) in f.agents.iter().enumerate() {
            self.name(&format!("agents[{i}]"), a, SHORT_NAME_MAX)?;
        }
        if f.p2a_capacity == 0 || f.p2a_capacity > 4096 {
            return Err(self.err(format!(
                "p2a_capacity {} is not in 1..=4096",
                f.p2a_capacity
            )));
        }
        self.count("sensors", &f.sensors)?;
        self.count("clocks", &f.clocks)?;
        self.count("perf_domains", &f.perf_domains)?;
        self.count("power_domains", &f.power_domains)?;
        self.count("reset_domains", &f.reset_domains)?;
        self.count("voltage_domains", &f.voltage_domains)?;
        let mut cfg = PlatformConfig {
            vendor: f.vendor,
            sub_vendor: f.sub_vendor,
            implementation_version: f.implementation_version,
            agents: f.agents,
            system_power: f.system_power,
            // The fwipc test protocol is for the conformance suite, not a device.
            test_protocol: false,
            p2a_capacity: f.p2a_capacity,
            ..PlatformConfig::default()
        };
        for (i, s) in f.sensors.iter().enumerate() {
            self.at(s);
            cfg.sensors.push(self.sensor(i, s.get_ref())?);
        }
        cfg.sensor_protocol = !cfg.sensors.is_empty();
        for (i, c) in f.clocks.iter().enumerate() {
            self.at(c);
            cfg.clocks.push(self.clock(i, c.get_ref())?);
        }
        for (i, d) in f.perf_domains.iter().enumerate() {
            self.at(d);
            cfg.perf_domains.push(self.perf(i, d.get_ref())?);
        }
        for (i, d) in f.power_domains.iter().enumerate() {
            self.at(d);
            cfg.power_domains.push(self.power(i, d.get_ref())?);
        }
        for (i, d) in f.reset_domains.iter().enumerate() {
            self.at(d);
            let d = d.get_ref();
            self.name(&format!("reset_domains[{i}]"), &d.name, LONG_NAME_MAX)?;
            cfg.reset_domains.push(ResetDomainConfig {
                name: d.name.clone(),
                async_reset: d.asynchronous,
                latency_us: d.latency_us.unwrap_or(u32::MAX),
            });
        }
        for (i, d) in f.voltage_domains.iter().enumerate() {
            self.at(d);
            cfg.voltage_domains.push(self.voltage(i, d.get_ref())?);
        }
        Ok(DaemonConfig {
            platform: cfg,
            sensor_update: (f.sensor_update_ms > 0)
                .then(|| Duration::from_millis(u64::from(f.sensor_update_ms))),
        })
    }

    fn sensor(&self, i: usize, s: &SensorToml) -> Result<SensorConfig, ConfigError> {
        let what = format!("sensors[{i}]");
        self.name(&what, &s.name, SHORT_NAME_MAX)?;
        let unit = match &s.unit {
            UnitToml::Code(c) => *c,
            UnitToml::Name(n) => UNITS
                .iter()
                .find(|(u, _)| u == n)
                .map(|(_, c)| *c)
                .ok_or_else(|| {
                    let names: Vec<&str> = UNITS.iter().map(|(u, _)| *u).collect();
                    self.err(format!(
                        "{what} {:?}: unknown unit {n:?} (one of {}, or an SCMI unit code)",
                        s.name,
                        names.join(", ")
                    ))
                })?,
        };
        if !(-16..=15).contains(&s.unit_exponent) {
            return Err(self.err(format!(
                "{what} {:?}: unit_exponent {} is not in -16..=15",
                s.name, s.unit_exponent
            )));
        }
        let mut c = SensorConfig::scalar(&s.name, unit, s.value);
        c.unit_exponent = s.unit_exponent;
        c.constant = !s.drift;
        c.enabled = s.enabled;
        c.async_read = s.async_read;
        c.continuous_notify = s.notify;
        c.timestamped = s.timestamped;
        Ok(c)
    }

    fn clock(&self, i: usize, c: &ClockToml) -> Result<ClockConfig, ConfigError> {
        let what = format!("clocks[{i}] {:?}", c.name);
        self.name(&format!("clocks[{i}]"), &c.name, LONG_NAME_MAX)?;
        let (rates, first) = match (&c.rates_hz, &c.range_hz) {
            (Some(v), None) => {
                self.levels(&format!("{what}: rates_hz"), v)?;
                (ClockRates::Discrete(v.clone()), v[0])
            }
            (None, Some(r)) => {
                if r.min > r.max || r.step == 0 || r.min == 0 {
                    return Err(self.err(format!(
                        "{what}: range_hz needs 0 < min <= max and step > 0"
                    )));
                }
                (
                    ClockRates::Range {
                        min: r.min,
                        max: r.max,
                        step: r.step,
                    },
                    r.min,
                )
            }
            _ => {
                return Err(self.err(format!(
                "{what}: give exactly one of rates_hz = [..] and range_hz = {{ min, max, step }}"
            )))
            }
        };
        let rate = c.rate_hz.unwrap_or(first);
        let ok = match &rates {
            ClockRates::Discrete(v) => v.contains(&rate),
            ClockRates::Range { min, max, step } => {
                rate >= *min && rate <= *max && (rate - min).is_multiple_of(*step)
            }
        };
        if !ok {
            return Err(self.err(format!(
                "{what}: rate_hz {rate} is not one of the clock's rates"
            )));
        }
        Ok(ClockConfig {
            name: c.name.clone(),
            rates,
            rate,
            enabled: c.enabled,
        })
    }

    fn perf(&self, i: usize, d: &PerfToml) -> Result<PerfDomainConfig, ConfigError> {
        let what = format!("perf_domains[{i}] {:?}", d.name);
        self.name(&format!("perf_domains[{i}]"), &d.name, LONG_NAME_MAX)?;
        self.levels(&format!("{what}: levels"), &d.levels)?;
        if d.levels.contains(&0) {
            return Err(self.err(format!("{what}: a level of 0")));
        }
        let power = match &d.power {
            Some(p) if p.len() != d.levels.len() => {
                return Err(self.err(format!(
                    "{what}: power has {} entries, levels {}",
                    p.len(),
                    d.levels.len()
                )))
            }
            Some(p) => p.clone(),
            // A cost that grows with the level (an energy model needs one).
            None => d.levels.iter().map(|l| (l / 1000).max(1)).collect(),
        };
        let level = d.level.unwrap_or(d.levels[0]);
        if !d.levels.contains(&level) {
            return Err(self.err(format!("{what}: level {level} is not one of levels")));
        }
        let max = d.levels.iter().copied().max().unwrap_or(0);
        Ok(PerfDomainConfig {
            name: d.name.clone(),
            levels: d
                .levels
                .iter()
                .zip(&power)
                .map(|(l, p)| (*l, *p, d.latency_us))
                .collect(),
            level,
            sustained_freq_khz: d.sustained_freq_khz.unwrap_or(max),
        })
    }

    fn power(&self, i: usize, d: &PowerToml) -> Result<PowerDomainConfig, ConfigError> {
        use fwipc_scmi_virtio::protocol::ids::power::{STATE_OFF, STATE_ON};
        self.name(&format!("power_domains[{i}]"), &d.name, LONG_NAME_MAX)?;
        let state = match &d.state {
            None => STATE_ON,
            Some(PowerStateToml::Raw(s)) => *s,
            Some(PowerStateToml::Named(n)) if n == "on" => STATE_ON,
            Some(PowerStateToml::Named(n)) if n == "off" => STATE_OFF,
            Some(PowerStateToml::Named(n)) => {
                return Err(self.err(format!(
                    "power_domains[{i}] {:?}: state {n:?} is not \"on\", \"off\" or a number",
                    d.name
                )))
            }
        };
        Ok(PowerDomainConfig {
            name: d.name.clone(),
            state,
        })
    }

    fn voltage(&self, i: usize, d: &VoltageToml) -> Result<VoltageDomainConfig, ConfigError> {
        let what = format!("voltage_domains[{i}] {:?}", d.name);
        self.name(&format!("voltage_domains[{i}]"), &d.name, LONG_NAME_MAX)?;
        let (levels, first) = match (&d.levels_uv, &d.range_uv) {
            (Some(v), None) => {
                self.levels(&format!("{what}: levels_uv"), v)?;
                (VoltageLevels::Discrete(v.clone()), v[0])
            }
            (None, Some(r)) => {
                if r.min > r.max || r.step <= 0 {
                    return Err(self.err(format!("{what}: range_uv needs min <= max and step > 0")));
                }
                (
                    VoltageLevels::Range {
                        min: r.min,
                        max: r.max,
                        step: r.step,
                    },
                    r.min,
                )
            }
            _ => {
                return Err(self.err(format!(
                "{what}: give exactly one of levels_uv = [..] and range_uv = {{ min, max, step }}"
            )))
            }
        };
        let level = d.level_uv.unwrap_or(first);
        let ok = match &levels {
            VoltageLevels::Discrete(v) => v.contains(&level),
            VoltageLevels::Range { min, max, step } => {
                level >= *min
                    && level <= *max
                    && (i64::from(level) - i64::from(*min)) % i64::from(*step) == 0
            }
        };
        if !ok {
            return Err(self.err(format!(
                "{what}: level_uv {level} is not one of the domain's levels"
            )));
        }
        Ok(VoltageDomainConfig {
            name: d.name.clone(),
            levels,
            level,
            async_set: d.asynchronous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<PlatformConfig, String> {
        parse(Path::new("test.toml"), text)
            .map(|c| c.platform)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_linux_guest_config_maps_onto_the_platform() {
        let text = include_str!("../configs/linux-guest.toml");
        let d = parse(Path::new("configs/linux-guest.toml"), text).unwrap();
        assert_eq!(d.sensor_update, None);
        let c = d.platform;
        assert_eq!(c.vendor, "fwipc");
        assert_eq!(c.sub_vendor.as_deref(), Some("linux-test"));
        let names: Vec<&str> = c.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["soc-temp", "vdd-core"]);
        assert_eq!((c.sensors[0].unit, c.sensors[0].unit_exponent), (2, -3));
        assert_eq!((c.sensors[0].value, c.sensors[0].constant), (45_000, true));
        assert_eq!((c.sensors[1].unit, c.sensors[1].value), (5, 900));
        assert_eq!(c.clocks.len(), 2);
        assert!(matches!(&c.clocks[0].rates, ClockRates::Discrete(v) if v == &[24_000_000]));
        assert!(matches!(&c.clocks[1].rates,
            ClockRates::Discrete(v) if v == &[600_000_000, 1_200_000_000, 1_800_000_000]));
        let levels: Vec<u32> = c.perf_domains[0].levels.iter().map(|l| l.0).collect();
        assert_eq!(levels, [600_000, 1_200_000, 1_800_000]);
        assert_eq!(c.perf_domains[0].sustained_freq_khz, 1_800_000);
        assert_eq!(c.power_domains.len(), 2);
        assert_eq!(c.reset_domains.len(), 2);
        assert_eq!(c.voltage_domains[0].name, "vdd-io");
        assert_eq!(c.voltage_domains[0].level, 1_800_000);
        assert!(c.system_power && c.p2a && !c.test_protocol);
    }

    #[test]
    fn bad_toml_names_file_line_and_column() {
        let e =
            parse_str("vendor = \"x\"\n\n[[clocks]]\nname = \"a\"\nrates_hz = [1, \n").unwrap_err();
        assert!(e.starts_with("test.toml:"), "{e}");
        let e = parse_str("vendor = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(e.starts_with("test.toml:2: "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = parse_str(
            "vendor = \"x\"\n[[sensors]]\nname = \"t\"\nunit = \"celsius\"\nvalue = \"hot\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("test.toml:5: "), "{e}");
        let e = parse_str("sub_vendor = \"x\"\n").unwrap_err();
        assert!(e.contains("vendor"), "{e}");
    }

    #[test]
    fn checks_after_parsing_name_the_table_line() {
        let base = "vendor = \"v\"\n\n[[clocks]]\nname = \"ok\"\nrates_hz = [5]\n\n";
        let e = parse_str(&format!(
            "{base}[[clocks]]\nname = \"c\"\nrates_hz = [1, 2]\nrate_hz = 3\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("test.toml:7: clocks[1] \"c\": rate_hz 3"),
            "{e}"
        );
        let e = parse_str(&format!("{base}[[clocks]]\nname = \"c\"\n")).unwrap_err();
        assert!(e.contains("exactly one of rates_hz"), "{e}");
        let e = parse_str(&format!("{base}[[clocks]]\nname = \"c\"\nrates_hz = []\n")).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse_str("vendor = \"a-vendor-name-too-long\"\n").unwrap_err();
        assert!(e.contains("at most 15"), "{e}");
        let e =
            parse_str("vendor = \"v\"\n[[sensors]]\nname = \"t\"\nunit = \"parsecs\"\nvalue = 1\n")
                .unwrap_err();
        assert!(e.starts_with("test.toml:2: sensors[0]"), "{e}");
        assert!(e.contains("celsius"), "{e}");
        let e = parse_str(
            "vendor = \"v\"\n[[perf_domains]]\nname = \"p\"\nlevels = [1, 2]\npower = [1]\n",
        )
        .unwrap_err();
        assert!(e.contains("power has 1 entries"), "{e}");
        let e = parse_str("vendor = \"v\"\n[[voltage_domains]]\nname = \"v\"\nrange_uv = { min = 10, max = 20, step = 5 }\nlevel_uv = 12\n")
            .unwrap_err();
        assert!(e.contains("level_uv 12"), "{e}");
        let e = parse_str("vendor = \"v\"\n[[power_domains]]\nname = \"p\"\nstate = \"dim\"\n")
            .unwrap_err();
        assert!(e.contains("\"dim\""), "{e}");
    }

    #[test]
    fn defaults_and_ranges() {
        let c = parse_str(
            "vendor = \"v\"\nsystem_power = false\n\
             [[clocks]]\nname = \"r\"\nrange_hz = { min = 1000, max = 5000, step = 1000 }\n\
             [[voltage_domains]]\nname = \"v\"\nrange_uv = { min = 800000, max = 1000000, step = 50000 }\nlevel_uv = 900000\nasync = true\n\
             [[reset_domains]]\nname = \"r\"\nasync = true\nlatency_us = 5\n\
             [[power_domains]]\nname = \"p\"\nstate = \"off\"\n",
        )
        .unwrap();
        assert!(!c.system_power);
        assert_eq!(c.clocks[0].rate, 1000);
        assert!(c.voltage_domains[0].async_set);
        assert_eq!(c.voltage_domains[0].level, 900_000);
        assert!(c.reset_domains[0].async_reset);
        assert_eq!(c.reset_domains[0].latency_us, 5);
        assert_eq!(
            c.power_domains[0].state,
            fwipc_scmi_virtio::protocol::ids::power::STATE_OFF
        );
        assert!(c.sensors.is_empty() && !c.sensor_protocol);
        let d = parse(
            Path::new("t.toml"),
            "vendor = \"v\"\nsensor_update_ms = 250\n",
        )
        .unwrap();
        assert_eq!(d.sensor_update, Some(Duration::from_millis(250)));
    }
}
