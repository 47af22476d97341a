//! The SCMI session through the project's stack, unmodified: `fwipc_scmi_virtio::virtio::
//! ScmiVirtio` (the virtio-scmi `fwipc_transport_api::Transport`) over `fwipc_virtio`'s
//! [`MmioTransport`] and [`IdentityHal`] (or the shared-pool `BounceHal`), under the typed agent
//! `fwipc_scmi_virtio::protocol::Scmi`, polled (`Config::polled`) or interrupt-driven (the device
//! interrupt, routed to CPU 0, runs `ScmiVirtio::complete`; the pipelined waits park in
//! `fwipc_virtio`'s [`EventParker`], woken from the IRQ handler).

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use core::time::Duration;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use fwipc_scmi_virtio::header::make_target;
use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::{Config, Event, Filter, Scmi, ScmiError, WaitPolicy};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig, ScmiVirtioError};
use fwipc_transport_api::{
    wait_done, Completion, Deadline, Error, Request, Transport, TxOutcome, Wait,
};
use virtio_drivers::Hal;

use fwipc_virtio::aarch64::GenericTimer;
use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::mmio::MmioTransport;
use fwipc_virtio::parker::EventParker;

use crate::irq;
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

/// The virtio-scmi transport of this guest's interrupt-driven agents.
type Virtio = ScmiVirtio<IdentityHal, MmioTransport<'static>>;

/// Deadline of each command (replies take tens of microseconds under TCG; the margin is for a
/// loaded CI host, where QEMU and the daemon share two cores with other jobs).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Readings taken per sensor.
const READINGS: usize = 3;
/// How long the guest waits for the host to trigger a notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// `p2a`: negotiate P2A_CHANNELS and post eventq buffers. Only the guest's last driver instance
/// does: vhost-device-scmi 0.4.0 keeps the eventq chains it has stored across a device reset (QEMU
/// stops and restarts the vhost-user rings, the daemon's backend object survives), so a later
/// instance's notifications would also be written into the previous instance's freed buffers and
/// pushed onto the new used ring (seen here as "eventq used index jumped by 16" with an 8-entry
/// eventq, which the backend rejects and counts as a protocol error).
fn virtio_up<H: Hal>(
    transport: MmioTransport<'static>,
    timer: GenericTimer,
    tag: &str,
    p2a: bool,
) -> Result<ScmiVirtio<H, MmioTransport<'static>>, AgentError> {
    let cfg = ScmiVirtioConfig {
        // 16 descriptors = 8 messages in flight: enough for two CPUs sending one command each,
        // or one CPU's full pipeline, with small DMA rings.
        cmdq_size: Some(16),
        eventq_size: Some(8),
        p2a,
        clock: Some(Arc::new(timer)),
        ..ScmiVirtioConfig::default()
    };
    let virtio = ScmiVirtio::<H, _>::new(transport, cfg).map_err(AgentError::Setup)?;
    let caps = virtio.caps();
    println!(
        "{tag}: virtio-scmi up: features {:?}, {} messages of {} bytes, polling {}, notifications {}",
        virtio.features(),
        caps.max_msg,
        caps.max_msg_size,
        caps.polling,
        caps.notifications
    );
    Ok(virtio)
}

/// What a session found: the platform's vendor and its sensors' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// DISCOVER_VENDOR.
    pub vendor: String,
    /// Every sensor's name, by sensor id.
    pub sensors: Vec<String>,
}

/// The agent of an interrupt-driven session.
pub type Agent = Scmi<Virtio, GenericTimer>;

/// Polled session: bring the device up through the backend with every request in polled
/// completion mode (chosen at construction: `Config::polled`; no interrupt handler exists for the
/// device): discovery, sensors, round trips, a full pipeline. `H` is the DMA `Hal`: the identity
/// map, or the shared-pool `BounceHal`. Ends with the transport shut down (the device reset).
/// `tag` prefixes every line printed.
pub fn session_polled<H: Hal>(
    transport: MmioTransport<'static>,
    timer: GenericTimer,
    tag: &str,
) -> Result<Summary, AgentError> {
    let virtio = virtio_up::<H>(transport, timer, tag, false)?;
    let cfg = Config::default()
        .with_timeouts(COMMAND_TIMEOUT, COMMAND_TIMEOUT)
        .polled();
    let agent = Scmi::new(virtio, timer, cfg).ctx("agent set-up")?;
    let vendor = discover(&agent, tag)?;
    let sensors = sensors(&agent, &timer, tag)?;
    pipelined(
        agent.transport(),
        &timer,
        tag,
        Completion::Polled,
        Wait::Poll,
    )?;
    finish(&agent, tag)?;
    Ok(Summary { vendor, sensors })
}

/// An interrupt-driven agent left running: its device interrupt stays registered (and routed to
/// CPU 0) until [`Live::finish`].
pub struct Live {
    /// The agent, shareable between CPUs.
    pub agent: Arc<Agent>,
    registration: irq::Registration,
    tag: String,
}

impl Live {
    /// Unregister the interrupt, check the pool and counters, shut the transport down.
    pub fn finish(self) -> Result<(), AgentError> {
        drop(self.registration);
        finish(&self.agent, &self.tag)
    }
}

/// Interrupt-driven session: the device interrupt (GIC INTID `intid`, edge-triggered if `edge`)
/// runs
/// `ScmiVirtio::complete`; the agent sleeps in `wfe` between polls; P2A negotiated. Discovery,
/// sensors, round trips, a full pipeline waiting with `Wait::Completion`, one SENSOR_UPDATE
/// notification. The agent is left running (see [`Live`]) for the concurrent stage.
pub fn session_interrupt(
    transport: MmioTransport<'static>,
    timer: GenericTimer,
    intid: u32,
    edge: bool,
    tag: &str,
) -> Result<(Summary, Live), AgentError> {
    let virtio = virtio_up::<IdentityHal>(transport, timer, tag, true)?;
    let cfg = Config {
        wait: WaitPolicy::SpinThenYield {
            spins: 0,
            relax: irq::idle,
        },
        ..Config::default()
    }
    .with_timeouts(COMMAND_TIMEOUT, COMMAND_TIMEOUT);
    let agent = Arc::new(Scmi::new(virtio, timer, cfg).ctx("agent set-up")?);
    let (before, _) = irq::counts();
    let handler = agent.clone();
    let registration = irq::register(
        intid,
        edge,
        Box::new(move || handler.transport().complete()),
    )
    .ok_or(AgentError::Check("a free IRQ handler slot, on CPU 0"))?;
    // The line may already be high from before the registration (edge-triggered, that edge is
    // gone): one pass acknowledges it, so the next completion raises a fresh edge.
    agent.transport().complete();
    println!("{tag}: device interrupt INTID {intid} -> ScmiVirtio::complete");
    println!(
        "{tag}: INTID {intid} {}-triggered (device tree), routed to cpu{}",
        if edge { "edge" } else { "level" },
        irq::IRQ_CPU
    );
    let vendor = discover(&agent, tag)?;
    let sensors = sensors(&agent, &timer, tag)?;
    // `Wait::Completion`: each wait registers the parker's waker with the transport and parks in
    // `wfe`; `complete()` in the IRQ handler wakes it.
    let parker = EventParker::new(timer, irq::idle);
    pipelined(
        agent.transport(),
        &timer,
        tag,
        Completion::Interrupt,
        Wait::Completion(&parker),
    )?;
    let first = sensors.first().map(String::as_str).unwrap_or("");
    notification(&agent, &timer, tag, first)?;
    let (after, spurious) = irq::counts();
    println!(
        "{tag}: {} device interrupts handled, {} spurious",
        after - before,
        spurious
    );
    check(after > before, "replies completed by the interrupt handler")?;
    let live = Live {
        agent,
        registration,
        tag: tag.to_string(),
    };
    Ok((Summary { vendor, sensors }, live))
}

fn finish<T: Transport>(agent: &Scmi<T, GenericTimer>, tag: &str) -> Result<(), AgentError> {
    let stats = agent.transport_stats();
    let astats = agent.stats();
    println!(
        "{tag}: {} commands, {} notifications; transport {:?}",
        astats.commands, astats.notifications, stats
    );
    check(
        stats.pool_free == stats.pool_capacity,
        "every message buffer back in the pool",
    )?;
    check(
        stats.timed_out == 0 && stats.protocol_errors == 0,
        "no timeouts or protocol errors",
    )?;
    agent
        .transport()
        .shutdown()
        .map_err(|e| AgentError::Scmi("shutdown", e.into()))?;
    println!("{tag}: shut down");
    Ok(())
}

fn discover<T: Transport>(agent: &Scmi<T, GenericTimer>, tag: &str) -> Result<String, AgentError> {
    let base = agent.base();
    println!(
        "{tag}: base protocol version {}",
        base.version().ctx("BASE PROTOCOL_VERSION")?
    );
    let attrs = base.attributes().ctx("BASE PROTOCOL_ATTRIBUTES")?;
    println!(
        "{tag}: {} protocols besides base, {} agents",
        attrs.num_protocols, attrs.num_agents
    );
    let vendor = base.vendor().ctx("DISCOVER_VENDOR")?.to_string();
    println!("{tag}: vendor \"{vendor}\"");
    println!(
        "{tag}: implementation version {:#x}",
        base.implementation_version()
            .ctx("DISCOVER_IMPLEMENTATION_VERSION")?
    );
    let protocols = base.protocols().ctx("DISCOVER_LIST_PROTOCOLS")?;
    print!("{tag}: protocols [");
    for (i, p) in protocols.as_slice().iter().enumerate() {
        print!("{}{:#04x}", if i == 0 { "" } else { ", " }, p);
    }
    println!("]");
    check(
        protocols.contains(PROTO_SENSOR),
        "the platform implements the sensor protocol",
    )?;
    Ok(vendor)
}

fn sensors<T: Transport>(
    agent: &Scmi<T, GenericTimer>,
    timer: &GenericTimer,
    tag: &str,
) -> Result<Vec<String>, AgentError> {
    let sensor = agent.sensor();
    println!(
        "{tag}: sensor protocol version {}",
        sensor.version().ctx("SENSOR PROTOCOL_VERSION")?
    );
    let attrs = sensor.attributes().ctx("SENSOR PROTOCOL_ATTRIBUTES")?;
    println!("{tag}: {} sensors", attrs.num_sensors);
    let descs = sensor.descriptions_vec().ctx("SENSOR_DESCRIPTION_GET")?;
    check(
        descs.len() == usize::from(attrs.num_sensors),
        "one descriptor per sensor",
    )?;
    let mut names = Vec::with_capacity(descs.len());
    for d in &descs {
        names.push(d.name.to_string());
        println!(
            "{tag}: sensor {} \"{}\": {} axes, unit {}, continuous-update notify {}",
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
                "{tag}: sensor {} axis {} \"{}\": unit {}",
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
            print!("{tag}: sensor {} reading {}:", d.id, n);
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
        "{tag}: round trip over {} calls: avg {} us",
        n,
        timer.now_ns().saturating_sub(t0) / n / 1000
    );
    Ok(names)
}

/// Fill the transport: `max_msg` BASE PROTOCOL_VERSION requests in flight at once (all sent
/// before any is waited for), check the next send is refused with `Busy`, then wait for every
/// reply in send order and check each one. Exercises the backend's slots, tokens and pool against
/// the real device, which may complete them in any order.
fn pipelined<T: Transport>(
    t: &T,
    timer: &GenericTimer,
    tag: &str,
    completion: Completion,
    wait: Wait<'_>,
) -> Result<(), AgentError> {
    let transport = |what: &'static str| move |e: Error| AgentError::Scmi(what, e.into());
    let n = t.caps().max_msg;
    let req = Request {
        completion,
        ..Request::new(make_target(0x10, 0x0), &[])
    };
    let mut tickets = Vec::with_capacity(n);
    for _ in 0..n {
        tickets.push(t.send(&req).map_err(transport("pipelined send"))?);
    }
    let busy = match t.send(&req) {
        Err(Error::Busy) => true,
        Ok(extra) => {
            t.mark_txdone(extra, TxOutcome::Cancelled);
            false
        }
        Err(_) => false,
    };
    let deadline = Deadline::after(timer, COMMAND_TIMEOUT);
    let mut replies_ok = 0;
    for ticket in tickets {
        let done = wait_done(t, &ticket, timer, deadline, wait);
        let mut out = [0u8; 16];
        let reply = done.and_then(|()| t.fetch_response(&ticket, &mut out));
        t.mark_txdone(
            ticket,
            if reply.is_ok() {
                TxOutcome::Done
            } else {
                TxOutcome::TimedOut
            },
        );
        let len = reply.map_err(transport("pipelined reply"))?;
        if len == 4 && out[..4] == 0x20000u32.to_le_bytes() {
            replies_ok += 1;
        }
    }
    println!(
        "{tag}: {n} requests in flight at once: {replies_ok} correct replies; next send {}",
        if busy { "Busy" } else { "NOT refused" }
    );
    check(
        replies_ok == n,
        "every pipelined reply is BASE version 0x20000",
    )?;
    check(busy, "a send beyond max_msg is refused with Busy")
}

/// Values of the last SENSOR_UPDATE seen by the subscriber.
#[derive(Default)]
struct Seen {
    count: AtomicU32,
    sensor: AtomicU32,
    axes: AtomicU32,
    values: [AtomicI64; 3],
}

fn notification<T: Transport>(
    agent: &Scmi<T, GenericTimer>,
    timer: &GenericTimer,
    tag: &str,
    sensor_name: &str,
) -> Result<(), AgentError> {
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
    // The host script triggers the notification on the daemon whose sensor has this name.
    println!("{tag}: waiting for SENSOR_UPDATE from \"{sensor_name}\"");
    let deadline = timer.deadline(NOTIFY_TIMEOUT);
    // Acquire: pairs with the subscriber's Release increment.
    while seen.count.load(Ordering::Acquire) == 0 {
        if timer.expired(deadline) {
            return Err(AgentError::Check("a SENSOR_UPDATE within 10 s"));
        }
        agent.pump();
        irq::idle();
    }
    print!(
        "{tag}: notification SENSOR_UPDATE sensor {}:",
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
    println!("{tag}: cmdq after notifications ok");
    Ok(())
}
