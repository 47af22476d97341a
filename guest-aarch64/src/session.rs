//! One device's SCMI sessions through the product stack, unmodified: `fwipc_scmi_virtio`'s
//! `ScmiVirtio` (the virtio-scmi `Transport`) over `fwipc_virtio`'s `MmioTransport` and a `Hal`
//! (`IdentityHal`, or `BounceHal` over the shared pool), under the typed agent `Scmi`; polled
//! (`Config::polled`) or interrupt-driven (the device interrupt runs `ScmiVirtio::complete`; the
//! pipelined waits park in `fwipc_virtio`'s `EventParker`, woken from the IRQ handler).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use fwipc_scmi_virtio::header::make_target;
use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::{Config, Event, Filter, Scmi};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::{
    Completion, Deadline, Error, Request, Transfer, Transport, TxOutcome, Wait,
};
use fwipc_virtio::aarch64::GenericTimer;
use fwipc_virtio::bounce::{BounceHal, BouncePool, SharedRegion, StaticPool};
use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::mmio::MmioTransport;
use fwipc_virtio::parker::EventParker;
use virtio_drivers::Hal;

use crate::{check, gic, join, Ctx, Res};

/// Deadline of each command (replies take tens of microseconds under TCG; the margin is for a
/// loaded host, where QEMU and the daemons share few cores with other work).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Sensor protocol id and its SENSOR_UPDATE notification id.
const PROTO_SENSOR: u8 = 0x15;
const SENSOR_UPDATE: u8 = 0x1;

/// The region the bounce stage shares with the host: a protected VM would now ask the hypervisor
/// to share it (pKVM `MEM_SHARE`, the CCA RSI call); under QEMU the host reaches all guest RAM.
static SHARED: StaticPool<{ 256 * 1024 }> = StaticPool::new();
/// virtio-drivers' `Hal` has no `self`: `BounceHal` finds its pool through this type.
pub struct Shared;
impl SharedRegion for Shared {
    fn pool() -> &'static BouncePool {
        SHARED.pool()
    }
}
/// The bounce stage's `Hal`: every ring and buffer in the shared pool.
pub type SharedHal = BounceHal<Shared>;

/// What a session found: the vendor and the sensors' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub vendor: String,
    pub sensors: Vec<String>,
}

/// The interrupt-driven agent type, shared by both CPUs in the concurrent stage.
pub type Agent = Scmi<ScmiVirtio<IdentityHal, MmioTransport<'static>>, GenericTimer>;

/// `p2a`: negotiate P2A_CHANNELS and post eventq buffers. Only the last driver instance of a
/// device does: vhost-device-scmi 0.4.0 keeps the eventq chains it stored across a device reset,
/// so a later instance's notifications would also land in the previous instance's freed buffers.
fn virtio_up<H: Hal>(
    t: MmioTransport<'static>,
    timer: GenericTimer,
    tag: &str,
    p2a: bool,
) -> Res<ScmiVirtio<H, MmioTransport<'static>>> {
    let cfg = ScmiVirtioConfig {
        // 16 descriptors = 8 messages in flight: both CPUs' commands, or one full pipeline.
        cmdq_size: Some(16),
        eventq_size: Some(8),
        p2a,
        clock: Some(Arc::new(timer)),
        ..ScmiVirtioConfig::default()
    };
    let virtio = ScmiVirtio::<H, _>::new(t, cfg).ctx("virtio-scmi setup")?;
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

/// Polled session (no interrupt handler exists for the device): discovery, sensors, a full
/// pipeline, then shutdown (the device reset). `H`: the identity map or the shared pool.
pub fn polled<H: Hal>(t: MmioTransport<'static>, timer: GenericTimer, tag: &str) -> Res<Summary> {
    let virtio = virtio_up::<H>(t, timer, tag, false)?;
    let agent =
        Scmi::new(virtio, timer, Config::default().with_timeouts(TIMEOUT, TIMEOUT).polled())
            .ctx("agent")?;
    let summary = survey(&agent, tag)?;
    pipelined(agent.transport(), &timer, tag, Completion::Polled, Wait::Poll)?;
    finish(&agent, tag)?;
    Ok(summary)
}

/// An interrupt-driven agent left running, its interrupt registered until [`Live::finish`].
pub struct Live {
    pub agent: Arc<Agent>,
    pub summary: Summary,
    registration: gic::Registration,
    tag: String,
}

impl Live {
    /// Unregister the interrupt, check the pool and counters, shut the transport down.
    pub fn finish(self) -> Res {
        drop(self.registration);
        finish(&*self.agent, &self.tag)
    }
}

/// Interrupt-driven session: SPI `intid` runs `ScmiVirtio::complete`; P2A negotiated; discovery,
/// sensors, a full pipeline waiting with `Wait::Completion`, one SENSOR_UPDATE notification.
pub fn interrupt(
    t: MmioTransport<'static>,
    timer: GenericTimer,
    intid: u32,
    edge: bool,
    tag: &str,
) -> Res<Live> {
    let virtio = virtio_up::<IdentityHal>(t, timer, tag, true)?;
    let cfg =
        Config { wait: Wait::SpinThenYield { spins: 0, relax: &gic::idle }, ..Config::default() };
    let agent =
        Arc::new(Scmi::new(virtio, timer, cfg.with_timeouts(TIMEOUT, TIMEOUT)).ctx("agent")?);
    let (before, _) = gic::counts();
    let handler = agent.clone();
    let registration =
        gic::register(intid, edge, Box::new(move || handler.transport().complete()))?;
    // The line may have risen before the registration, an edge now lost: one pass acknowledges
    // it, so the next completion raises a fresh edge.
    agent.transport().complete();
    println!("{tag}: device interrupt INTID {intid} -> ScmiVirtio::complete");
    println!(
        "{tag}: INTID {intid} {}-triggered (device tree), routed to cpu0",
        if edge { "edge" } else { "level" }
    );
    let summary = survey(&*agent, tag)?;
    let parker = EventParker::new(timer, gic::idle);
    pipelined(agent.transport(), &timer, tag, Completion::Interrupt, Wait::Completion(&parker))?;
    notification(&*agent, &timer, tag, summary.sensors.first().map_or("", String::as_str))?;
    let (after, unclaimed) = gic::counts();
    let n = after[0] - before[0];
    println!("{tag}: {n} device interrupts handled, {unclaimed} spurious");
    check(n > 0, "replies completed by the interrupt handler")?;
    Ok(Live { agent, summary, registration, tag: tag.to_string() })
}

fn finish<T: Transport>(agent: &Scmi<T, GenericTimer>, tag: &str) -> Res {
    let stats = agent.transport_stats();
    println!(
        "{tag}: {} commands, {} notifications; transport {stats:?}",
        agent.stats().commands,
        agent.stats().notifications
    );
    check(stats.pool_free == stats.pool_capacity, "every message buffer back in the pool")?;
    check(stats.timed_out == 0 && stats.protocol_errors == 0, "no timeouts or protocol errors")?;
    agent.transport().shutdown().ctx("shutdown")?;
    println!("{tag}: shut down");
    Ok(())
}

/// Base discovery, then every sensor: description, axes, enable, three readings.
fn survey<T: Transport>(agent: &Scmi<T, GenericTimer>, tag: &str) -> Res<Summary> {
    let base = agent.base();
    println!("{tag}: base protocol version {}", base.version().ctx("BASE PROTOCOL_VERSION")?);
    let attrs = base.attributes().ctx("BASE PROTOCOL_ATTRIBUTES")?;
    println!("{tag}: {} protocols besides base, {} agents", attrs.num_protocols, attrs.num_agents);
    let vendor = base.vendor().ctx("DISCOVER_VENDOR")?.to_string();
    println!("{tag}: vendor \"{vendor}\"");
    let implementation = base.implementation_version().ctx("DISCOVER_IMPLEMENTATION_VERSION")?;
    println!("{tag}: implementation version {implementation:#x}");
    let protocols = base.protocols().ctx("DISCOVER_LIST_PROTOCOLS")?;
    let list = join(protocols.as_slice().iter().map(|p| format!("{p:#04x}")), ", ");
    println!("{tag}: protocols [{list}]");
    check(protocols.contains(PROTO_SENSOR), "the platform implements the sensor protocol")?;

    let sensor = agent.sensor();
    println!("{tag}: sensor protocol version {}", sensor.version().ctx("SENSOR PROTOCOL_VERSION")?);
    let attrs = sensor.attributes().ctx("SENSOR PROTOCOL_ATTRIBUTES")?;
    println!("{tag}: {} sensors", attrs.num_sensors);
    let descs = sensor.descriptions_vec().ctx("SENSOR_DESCRIPTION_GET")?;
    check(descs.len() == usize::from(attrs.num_sensors), "one descriptor per sensor")?;
    let mut sensors = Vec::new();
    for d in &descs {
        sensors.push(d.name.to_string());
        let (id, axes) = (d.id, d.num_axes());
        println!(
            "{tag}: sensor {id} \"{}\": {axes} axes, unit {}, continuous-update notify {}",
            d.name,
            d.unit(),
            d.continuous_notify()
        );
        for a in sensor
            .axis_descriptions_vec(id, Some(u32::from(axes)))
            .ctx("SENSOR_AXIS_DESCRIPTION_GET")?
        {
            println!("{tag}: sensor {id} axis {} \"{}\": unit {}", a.id, a.name, a.unit());
        }
        sensor.set_enabled(id, true).ctx("SENSOR_CONFIG_SET")?;
        let mut values = [Default::default(); 8];
        for n in 0..3 {
            let count = sensor.reading_axes(id, &mut values).ctx("SENSOR_READING_GET")?;
            println!(
                "{tag}: sensor {id} reading {n}: {}",
                join(values.iter().take(count).map(|v| v.value), " ")
            );
        }
    }
    Ok(Summary { vendor, sensors })
}

/// Fill the transport: `max_msg` BASE PROTOCOL_VERSION requests in flight at once, check the next
/// send is refused with `Busy`, then wait for every reply in send order and check it. Exercises
/// the backend's slots, tokens and pool against a real device completing in any order.
fn pipelined<T: Transport>(
    t: &T,
    timer: &GenericTimer,
    tag: &str,
    completion: Completion,
    wait: Wait<'_>,
) -> Res {
    let n = t.caps().max_msg;
    let req = Request { completion, ..Request::new(make_target(0x10, 0x0), &[]) };
    let xs = (0..n).map(|_| Transfer::send(t, &req)).collect::<Result<Vec<_>, _>>();
    let xs = xs.ctx("pipelined send")?;
    // One more is refused; were it accepted, dropping it would end it as Cancelled.
    let busy = matches!(Transfer::send(t, &req), Err(Error::Busy));
    let deadline = Deadline::after(timer, TIMEOUT);
    let mut correct = 0;
    for x in xs {
        let mut out = [0u8; 16];
        let waited = x.wait(timer, deadline, wait);
        let reply = waited.and_then(|()| x.fetch_response(&mut out));
        x.finish(TxOutcome::after_wait(&waited));
        if reply.ctx("pipelined reply")? == 4 && out[..4] == 0x20000u32.to_le_bytes() {
            correct += 1;
        }
    }
    let next = if busy { "Busy" } else { "NOT refused" };
    println!("{tag}: {n} requests in flight at once: {correct} correct replies; next send {next}");
    check(correct == n, "every pipelined reply is BASE version 0x20000")?;
    check(busy, "a send beyond max_msg is refused with Busy")
}

/// Subscribe to SENSOR_UPDATE, enable continuous updates on sensor 0, pump until the one the host
/// script triggers on this device's daemon arrives, then check the cmdq still works.
fn notification<T: Transport>(
    agent: &Scmi<T, GenericTimer>,
    timer: &GenericTimer,
    tag: &str,
    name: &str,
) -> Res {
    // Written by the subscriber, which `pump` runs on this CPU.
    let seen = Arc::new(spin::Mutex::new(None::<(u32, String)>));
    let sink = seen.clone();
    let on_event = move |ev: &Event<'_>| {
        if let Ok(Notification::SensorUpdate(u)) = Notification::decode(ev) {
            let values = (0..u.count).filter_map(|i| u.value(ev.payload, i)).map(|v| v.value);
            *sink.lock() = Some((u.sensor_id, join(values, " ")));
        }
    };
    let sub = agent
        .subscribe(Filter::exact(PROTO_SENSOR, SENSOR_UPDATE), Arc::new(on_event))
        .ok_or("no free subscriber slot")?;
    let sensor = agent.sensor();
    sensor.continuous_update_notify(0, true).ctx("SENSOR_CONTINUOUS_UPDATE_NOTIFY on")?;
    println!("{tag}: waiting for SENSOR_UPDATE from \"{name}\"");
    let deadline = timer.deadline(Duration::from_secs(10));
    let (id, values) = loop {
        if let Some(update) = seen.lock().take() {
            break update;
        }
        check(!timer.expired(deadline), "a SENSOR_UPDATE within 10 s")?;
        agent.pump();
        gic::idle();
    };
    println!("{tag}: notification SENSOR_UPDATE sensor {id}: {values}");
    sensor.continuous_update_notify(0, false).ctx("SENSOR_CONTINUOUS_UPDATE_NOTIFY off")?;
    agent.unsubscribe(sub);
    // The platform keeps filling posted eventq buffers while the host's byte is unread: drain
    // them so the pool check sees a quiet channel.
    while agent.pump() > 0 {}
    sensor.reading(0).ctx("SENSOR_READING_GET after notifications")?;
    println!("{tag}: cmdq after notifications ok");
    Ok(())
}
