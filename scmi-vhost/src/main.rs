//! # fwipc-scmi-vhost
//!
//! A vhost-user SCMI device daemon (virtio device id 32): a VMM (QEMU's `vhost-user-scmi`, or
//! the fwipc test harness) connects to its socket and hands it the guest's command and event
//! queues; the daemon answers the guest's SCMI agent (Linux `arm_scmi`, fwipc's `Scmi`) with
//! fwipc's simulated SCMI platform, configured from a TOML file: Base, Sensor, Clock,
//! Performance, Power, Reset, Voltage and System power on the command queue, notifications and
//! delayed responses on the event queue, every listing paginated to the reply buffer the agent
//! posted.
//!
//! ```sh
//! fwipc-scmi-vhost --socket-path /tmp/scmi.sock --config scmi-vhost/configs/linux-guest.toml
//! ```
//!
//! It serves one front-end connection and exits 0 when the front-end disconnects. Logs go
//! through `env_logger` (`RUST_LOG=debug` for every request).
//!
//! - [`config`]: the TOML file → `PlatformConfig`.
//! - [`chain`]: one descriptor chain, checked before use.
//! - [`device`]: command and event queue handling over any guest memory.
//! - [`backend`]: the `vhost-user-backend` glue.

mod backend;
mod chain;
mod config;
mod device;
#[cfg(test)]
mod device_tests;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use clap::Parser;
use fwipc_scmi_virtio::platform::ClockRates;
use log::{error, info, warn};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use backend::ScmiBackend;

/// Discrete rates per clock Linux's SCMI clock driver accepts (seen with Linux 6.12: "No. of
/// resources can't exceed 16" for a clock with more).
const LINUX_CLOCK_RATES_MAX: usize = 16;

/// A vhost-user SCMI device (virtio device id 32) serving fwipc's simulated SCMI platform.
///
/// Serves one vhost-user front-end on SOCKET_PATH with the platform the TOML file CONFIG
/// describes (vendor, sensors, clocks, performance, power, reset and voltage domains), then
/// exits when the front-end disconnects. Set RUST_LOG (e.g. debug) for more logging.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// vhost-user socket to listen on (created; an existing socket file is replaced).
    #[arg(short = 's', long, value_name = "PATH")]
    socket_path: Option<PathBuf>,
    /// Platform description (TOML; see the README for the schema).
    #[arg(short = 'c', long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration, print what it describes, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let cfg = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fwipc-scmi-vhost: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: {}", args.config.display(), summary(&cfg.platform));
        return ExitCode::SUCCESS;
    }
    let Some(socket) = args.socket_path else {
        eprintln!("fwipc-scmi-vhost: --socket-path is required (unless --check)");
        return ExitCode::from(2);
    };
    info!("{}: {}", args.config.display(), summary(&cfg.platform));
    for c in &cfg.platform.clocks {
        if let ClockRates::Discrete(v) = &c.rates {
            if v.len() > LINUX_CLOCK_RATES_MAX {
                warn!(
                    "clock {:?} has {} discrete rates; Linux (6.12) takes at most {LINUX_CLOCK_RATES_MAX} and fails to describe its rates",
                    c.name,
                    v.len()
                );
            }
        }
    }
    match serve(cfg, &socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("fwipc-scmi-vhost: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line about what the configuration describes.
fn summary(cfg: &fwipc_scmi_virtio::platform::PlatformConfig) -> String {
    format!(
        "vendor {:?}, sub-vendor {:?}, {} sensors, {} clocks, {} perf, {} power, {} reset, {} voltage domains, system power {}",
        cfg.vendor,
        cfg.sub_vendor.as_deref().unwrap_or("-"),
        cfg.sensors.len(),
        cfg.clocks.len(),
        cfg.perf_domains.len(),
        cfg.power_domains.len(),
        cfg.reset_domains.len(),
        cfg.voltage_domains.len(),
        cfg.system_power
    )
}

/// Serve one front-end connection on `socket`.
fn serve(cfg: config::DaemonConfig, socket: &std::path::Path) -> Result<(), String> {
    let mut b = ScmiBackend::new(cfg.platform).map_err(|e| format!("exit eventfd: {e}"))?;
    let timer = match cfg.sensor_update {
        Some(p) => Some(
            b.start_sensor_timer(p)
                .map_err(|e| format!("sensor timer: {e}"))?,
        ),
        None => None,
    };
    let backend = Arc::new(RwLock::new(b));
    let mut daemon = VhostUserDaemon::new(
        "fwipc-scmi-vhost".to_string(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| format!("vhost-user daemon: {e}"))?;
    if let Some(fd) = timer {
        // One worker thread serves every queue (the default `queues_per_thread`).
        let handlers = daemon.get_epoll_handlers();
        let h = handlers
            .first()
            .ok_or_else(|| "no worker thread".to_string())?;
        h.register_listener(fd, EventSet::IN, u64::from(backend::SENSOR_TIMER))
            .map_err(|e| format!("registering the sensor timer: {e}"))?;
    }
    info!("listening on {}", socket.display());
    let result = daemon
        .serve(socket)
        .map_err(|e| format!("serving {}: {e}", socket.display()));
    let _ = std::fs::remove_file(socket);
    match backend.read() {
        Ok(b) => info!("front-end gone; {:?}", b.stats()),
        Err(_) => error!("backend lock poisoned"),
    }
    result
}
