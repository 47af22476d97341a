//! The SCMI session through the project's stack, unmodified: `backend_scmi_virtio::virtio::
//! ScmiVirtio` (the virtio-scmi `fwipc_transport_api::Transport`) over this guest's
//! [`ModernMmioTransport`] and [`IdentityHal`], under the typed agent
//! `backend_scmi_virtio::protocol::Scmi`, polled (see [`Polled`]).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use core::time::Duration;

use backend_scmi_virtio::protocol::notify::Notification;
use backend_scmi_virtio::protocol::{Config, Event, Filter, Scmi, ScmiError};
use backend_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig, ScmiVirtioError};
use fwipc_transport_api::Transport as _;

use crate::hal::IdentityHal;
use crate::mmio::ModernMmioTransport;
use crate::polled::Polled;
use crate::timer::GenericTimer;
use crate::{print, println};

/// Sensor protocol id and its SENSOR_UPDATE notification id.
const PROTO_SENSOR: u8 = 0x15;
const SENSOR_UPDATE: u8 = 0x1;

/// Why the agent session failed.
#[derive(Debug)]
pub enum AgentError {
    /// `ScmiVirtio::new` failed.
    Setup(ScmiVirtioError),
    /// A command failed.
    Scmi(&'static str, ScmiError),
    /// A check on the results failed.
    Check(&'static str),
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AgentError::Setup(e) => write!(f, "virtio-scmi setup: {e}"),
            AgentError::Scmi(what, e) => write!(f, "{what}: {e}"),
            AgentError::Check(what) => write!(f, "check failed: {what}"),
        }
    }
}

trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, AgentError>;
}

impl<T> Ctx<T> for Result<T, ScmiError> {
    fn ctx(self, what: &'static str) -> Result<T, AgentError> {
        self.map_err(|e| AgentError::Scmi(what, e))
    }
}

fn check(cond: bool, what: &'static str) -> Result<(), AgentError> {
    if cond {
        Ok(())
    } else {
        Err(AgentError::Check(what))
    }
}

type Agent = Scmi<Polled<ScmiVirtio<IdentityHal, ModernMmioTransport>>, GenericTimer>;

/// Readings taken per sensor.
const READINGS: usize = 3;
/// How long the guest waits for the host to trigger a notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bring the device up through the backend, discover the platform, read the sensors, take one
/// SENSOR_UPDATE notification, shut down.
pub fn session(transport: ModernMmioTransport, timer: GenericTimer) -> Result<(), AgentError> {
    let cfg = ScmiVirtioConfig {
        // 16 descriptors = 8 messages in flight: plenty for one CPU, and small DMA rings.
        cmdq_size: Some(16),
        eventq_size: Some(8),
        p2a: true,
        clock: Some(Arc::new(timer)),
        ..ScmiVirtioConfig::default()
    };
    let virtio = ScmiVirtio::<IdentityHal, _>::new(transport, cfg).map_err(AgentError::Setup)?;
    let caps = virtio.caps();
    println!(
        "agent: virtio-scmi up: features {:?}, {} messages of {} bytes, polling {}, notifications {}",
        virtio.features(),
        caps.max_msg,
        caps.max_msg_size,
        caps.polling,
        caps.notifications
    );
    let agent: Agent = Scmi::new(
        Polled(virtio),
        timer,
        Config::default().with_timeouts(Duration::from_secs(2), Duration::from_secs(2)),
    )
    .ctx("agent set-up")?;

    discover(&agent)?;
    sensors(&agent, &timer)?;
    notification(&agent, &timer)?;

    let stats = agent.transport_stats();
    let astats = agent.stats();
    println!(
        "agent: {} commands, {} notifications; transport stats {:?}",
        astats.commands, astats.notifications, stats
    );
    check(
        stats.pool_free == stats.pool_capacity,
        "every message buffer back in the pool",
    )?;
    agent
        .transport()
        .shutdown()
        .map_err(|e| AgentError::Scmi("shutdown", e.into()))?;
    println!("agent: shut down");
    Ok(())
}

fn discover(agent: &Agent) -> Result<(), AgentError> {
    let base = agent.base();
    println!(
        "agent: base protocol version {}",
        base.version().ctx("BASE PROTOCOL_VERSION")?
    );
    let attrs = base.attributes().ctx("BASE PROTOCOL_ATTRIBUTES")?;
    println!(
        "agent: {} protocols besides base, {} agents",
        attrs.num_protocols, attrs.num_agents
    );
    println!(
        "agent: vendor \"{}\"",
        base.vendor().ctx("DISCOVER_VENDOR")?
    );
    println!(
        "agent: implementation version {:#x}",
        base.implementation_version()
            .ctx("DISCOVER_IMPLEMENTATION_VERSION")?
    );
    let protocols = base.protocols().ctx("DISCOVER_LIST_PROTOCOLS")?;
    print!("agent: protocols [");
    for (i, p) in protocols.as_slice().iter().enumerate() {
        print!("{}{:#04x}", if i == 0 { "" } else { ", " }, p);
    }
    println!("]");
    check(
        protocols.contains(PROTO_SENSOR),
        "the platform implements the sensor protocol",
    )
}

fn sensors(agent: &Agent, timer: &GenericTimer) -> Result<(), AgentError> {
    let sensor = agent.sensor();
    println!(
        "agent: sensor protocol version {}",
        sensor.version().ctx("SENSOR PROTOCOL_VERSION")?
    );
    let attrs = sensor.attributes().ctx("SENSOR PROTOCOL_ATTRIBUTES")?;
    println!("agent: {} sensors", attrs.num_sensors);
    let descs = sensor.descriptions_vec().ctx("SENSOR_DESCRIPTION_GET")?;
    check(
        descs.len() == usize::from(attrs.num_sensors),
        "one descriptor per sensor",
    )?;
    for d in &descs {
        println!(
            "agent: sensor {} \"{}\": {} axes, unit {}, continuous-update notify {}",
            d.id,
            d.name,
            d.num_axes(),
            d.unit(),
            d.continuous_notify()
        );
        let axes = sensor
            .axis_descriptions_vec(d.id, Some(u32::from(d.num_axes())))
            .ctx("SENSOR_AXIS_DESCRIPTION_GET")?;
        for a in &axes {
            println!(
                "agent: sensor {} axis {} \"{}\": unit {}",
                d.id,
                a.id,
                a.name,
                a.attributes_high & 0xff
            );
        }
        sensor.set_enabled(d.id, true).ctx("SENSOR_CONFIG_SET")?;
        let mut values = [Default::default(); 8];
        for n in 0..READINGS {
            let count = sensor
                .reading_axes(d.id, &mut values)
                .ctx("SENSOR_READING_GET")?;
            print!("agent: sensor {} reading {}:", d.id, n);
            for v in values.iter().take(count) {
                print!(" {}", v.value);
            }
            println!();
        }
    }

    let t0 = timer.now_ns();
    let n = 200u64;
    for _ in 0..n {
        agent
            .base()
            .version()
            .ctx("BASE PROTOCOL_VERSION round trip")?;
    }
    println!(
        "agent: round trip over {} calls: avg {} us",
        n,
        timer.now_ns().saturating_sub(t0) / n / 1000
    );
    Ok(())
}

/// Values of the last SENSOR_UPDATE seen by the subscriber.
#[derive(Default)]
struct Seen {
    count: AtomicU32,
    sensor: AtomicU32,
    axes: AtomicU32,
    values: [AtomicI64; 3],
}

fn notification(agent: &Agent, timer: &GenericTimer) -> Result<(), AgentError> {
    let seen = Arc::new(Seen::default());
    let sink = seen.clone();
    let sub = agent
        .subscribe(
            Filter::exact(PROTO_SENSOR, SENSOR_UPDATE),
            Arc::new(move |ev: &Event<'_>| {
                if let Ok(Notification::SensorUpdate(u)) = Notification::decode(ev) {
                    for (i, slot) in sink.values.iter().enumerate() {
                        if let Some(v) = u.value(ev.payload, i) {
                            // Relaxed: read by the same CPU after `pump` returns; the count's
                            // Release/Acquire pair below orders them anyway.
                            slot.store(v.value, Ordering::Relaxed);
                        }
                    }
                    sink.sensor.store(u.sensor_id, Ordering::Relaxed);
                    sink.axes.store(u.count as u32, Ordering::Relaxed);
                    // Release: publishes the stores above to whoever Acquire-loads the count.
                    sink.count.fetch_add(1, Ordering::Release);
                }
            }),
        )
        .ok_or(AgentError::Check("a free subscriber slot"))?;
    let sensor = agent.sensor();
    sensor
        .continuous_update_notify(0, true)
        .ctx("SENSOR_CONTINUOUS_UPDATE_NOTIFY on")?;
    println!("agent: waiting for SENSOR_UPDATE");
    let deadline = timer.deadline(NOTIFY_TIMEOUT);
    // Acquire: pairs with the subscriber's Release increment.
    while seen.count.load(Ordering::Acquire) == 0 {
        if timer.expired(deadline) {
            return Err(AgentError::Check("a SENSOR_UPDATE within 10 s"));
        }
        agent.pump();
        core::hint::spin_loop();
    }
    print!(
        "agent: notification SENSOR_UPDATE sensor {}:",
        seen.sensor.load(Ordering::Relaxed)
    );
    let axes = (seen.axes.load(Ordering::Relaxed) as usize).min(seen.values.len());
    for v in seen.values.iter().take(axes) {
        print!(" {}", v.load(Ordering::Relaxed));
    }
    println!();
    sensor
        .continuous_update_notify(0, false)
        .ctx("SENSOR_CONTINUOUS_UPDATE_NOTIFY off")?;
    agent.unsubscribe(sub);
    // The platform keeps filling posted eventq buffers while the host's byte is unread; drain what
    // arrived so the pool check sees a quiet channel, then check the cmdq still works.
    while agent.pump() > 0 {}
    sensor
        .reading(0)
        .ctx("SENSOR_READING_GET after notifications")?;
    println!("agent: cmdq after notifications ok");
    Ok(())
}
