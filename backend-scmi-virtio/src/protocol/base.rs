//! Base protocol (0x10): discovery of the platform, its protocols and agents.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::{parse_word, Version};
use super::error::{self, Malformed};
use super::ids::{base, common, proto};
use super::multipart::Pager;
use super::wire::{Reader, ShortName};

/// PROTOCOL_ATTRIBUTES of Base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseAttributes {
    /// Protocols implemented, excluding Base.
    pub num_protocols: u8,
    /// Agents in the system.
    pub num_agents: u8,
}

/// Parse Base PROTOCOL_ATTRIBUTES.
pub fn parse_attributes(r: &mut Reader<'_>) -> Result<BaseAttributes, Malformed> {
    let w = r.u32()?;
    Ok(BaseAttributes {
        num_protocols: w as u8,
        num_agents: (w >> 8) as u8,
    })
}

/// Parse a 16-byte name reply (DISCOVER_VENDOR / SUB_VENDOR).
pub fn parse_name(r: &mut Reader<'_>) -> Result<ShortName, Malformed> {
    ShortName::read(r)
}

/// DISCOVER_AGENT reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentInfo {
    /// Agent id (0 = platform).
    pub id: u32,
    /// Agent name.
    pub name: ShortName,
}

/// Parse DISCOVER_AGENT.
pub fn parse_agent(r: &mut Reader<'_>) -> Result<AgentInfo, Malformed> {
    Ok(AgentInfo {
        id: r.u32()?,
        name: ShortName::read(r)?,
    })
}

/// Parse one DISCOVER_LIST_PROTOCOLS page into `out`: num_returned, then ids packed 4 per word
/// (byte i % 4 of word i / 4), zero padded. Returns num_returned. Checks that the packed words
/// arrived and that the ids fit `out` (the space left before the advertised total).
pub fn parse_protocol_page(r: &mut Reader<'_>, out: &mut [u8]) -> Result<u32, Malformed> {
    let n = r.u32()?;
    let count = usize::try_from(n).map_err(|_| Malformed::OutOfRange)?;
    if count > out.len() {
        return Err(Malformed::OutOfRange);
    }
    let words = count.div_ceil(4);
    let packed = r.bytes(words * 4)?;
    for (dst, src) in out.iter_mut().zip(packed.iter()).take(count) {
        *dst = *src;
    }
    Ok(n)
}

/// The protocols a platform implements (Base excluded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProtocolList {
    ids: [u8; 255],
    len: u8,
}

impl ProtocolList {
    /// The ids in the order the platform listed them.
    pub fn as_slice(&self) -> &[u8] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Whether `id` is listed.
    pub fn contains(&self, id: u8) -> bool {
        self.as_slice().contains(&id)
    }
}

impl core::fmt::Debug for ProtocolList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list()
            .entries(self.as_slice().iter().map(|p| alloc::format!("{p:#04x}")))
            .finish()
    }
}

/// What [`Base::discover`] found: the Linux start-up sequence in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovery {
    /// Base protocol version.
    pub version: Version,
    /// Agents in the system (from PROTOCOL_ATTRIBUTES).
    pub num_agents: u8,
    /// DISCOVER_VENDOR.
    pub vendor: ShortName,
    /// DISCOVER_SUB_VENDOR, `None` if the platform answered with a status (vhost-device-scmi:
    /// NOT_SUPPORTED).
    pub sub_vendor: Option<ShortName>,
    /// DISCOVER_IMPLEMENTATION_VERSION.
    pub implementation_version: u32,
    /// DISCOVER_LIST_PROTOCOLS.
    pub protocols: ProtocolList,
}

/// Typed view of the Base protocol. Obtain with [`Scmi::base`].
///
/// ```
/// # use fwipc_scmi_virtio::platform::{Platform, PlatformConfig, direct::DirectTransport};
/// # use fwipc_scmi_virtio::protocol::{Scmi, Config};
/// # use fwipc_transport_api::StdClock;
/// let platform = Platform::new(PlatformConfig::vhost_device_scmi_like(1));
/// let scmi = Scmi::new(DirectTransport::new(platform), StdClock::new(), Config::default()).unwrap();
/// let base = scmi.base();
/// assert_eq!(base.vendor().unwrap(), "rust-vmm");
/// assert_eq!(base.protocols().unwrap().as_slice(), &[0x15]);
/// ```
pub struct Base<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The Base protocol.
    pub fn base(&self) -> Base<'_, T, C> {
        Base { scmi: self }
    }
}

impl<T: Transport, C: Clock> Base<'_, T, C> {
    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::BASE)
    }

    /// PROTOCOL_ATTRIBUTES.
    pub fn attributes(&self) -> error::Result<BaseAttributes> {
        self.scmi.cmd(
            proto::BASE,
            common::PROTOCOL_ATTRIBUTES,
            &[],
            parse_attributes,
        )
    }

    /// PROTOCOL_MESSAGE_ATTRIBUTES.
    pub fn message_attributes(&self, message: u8) -> error::Result<u32> {
        self.scmi.message_attributes(proto::BASE, message)
    }

    /// DISCOVER_VENDOR.
    pub fn vendor(&self) -> error::Result<ShortName> {
        self.scmi
            .cmd(proto::BASE, base::DISCOVER_VENDOR, &[], parse_name)
    }

    /// DISCOVER_SUB_VENDOR (vhost-device-scmi answers NOT_SUPPORTED).
    pub fn sub_vendor(&self) -> error::Result<ShortName> {
        self.scmi
            .cmd(proto::BASE, base::DISCOVER_SUB_VENDOR, &[], parse_name)
    }

    /// DISCOVER_IMPLEMENTATION_VERSION (vendor-defined).
    pub fn implementation_version(&self) -> error::Result<u32> {
        self.scmi.cmd(
            proto::BASE,
            base::DISCOVER_IMPLEMENTATION_VERSION,
            &[],
            parse_word,
        )
    }

    /// DISCOVER_AGENT (vhost-device-scmi answers NOT_SUPPORTED). `0xFFFF_FFFF` asks about the
    /// calling agent; any other id must come back unchanged.
    pub fn discover_agent(&self, agent_id: u32) -> error::Result<AgentInfo> {
        self.scmi
            .cmd(proto::BASE, base::DISCOVER_AGENT, &[agent_id], |r| {
                let a = parse_agent(r)?;
                if agent_id != u32::MAX && a.id != agent_id {
                    return Err(Malformed::IdMismatch);
                }
                Ok(a)
            })
    }

    /// NOTIFY_ERRORS: enable or disable BASE_ERROR_EVENT notifications.
    pub fn notify_errors(&self, enable: bool) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::BASE, base::NOTIFY_ERRORS, &[u32::from(enable)])
    }

    /// DISCOVER_LIST_PROTOCOLS, every page, into `out`; returns the number of ids. The total is the
    /// `num_protocols` of PROTOCOL_ATTRIBUTES; the loop is bounded (docs/protocols/scmi.md §5, §8
    /// item 7).
    pub fn discover_protocols(&self, out: &mut [u8]) -> error::Result<usize> {
        let total = u32::from(self.attributes()?.num_protocols);
        let mut pager = Pager::new(Some(total), self.scmi.config().max_rounds);
        while !pager.complete() {
            let skip = pager.index();
            let start = usize::try_from(skip).map_err(|_| super::ScmiError::InvalidArgument)?;
            let limit = usize::try_from(total).unwrap_or(usize::MAX).min(out.len());
            let dst = out
                .get_mut(start..limit)
                .ok_or(super::ScmiError::BufferTooSmall)?;
            let returned =
                self.scmi
                    .cmd(proto::BASE, base::DISCOVER_LIST_PROTOCOLS, &[skip], |r| {
                        parse_protocol_page(r, dst)
                    })?;
            let end = skip.saturating_add(returned);
            let remaining = total.saturating_sub(end);
            match pager.check(returned, remaining) {
                Ok(true) => {}
                Ok(false) => break,
                Err(m) => return Err(self.scmi.malformed(m)),
            }
            if !pager.advance(returned, remaining) {
                break;
            }
        }
        if pager.index() < total && out.len() < total as usize {
            return Err(super::ScmiError::BufferTooSmall);
        }
        // Every one of the `num_protocols` ids must have arrived (docs/protocols/scmi.md §5).
        let n = pager.finish().map_err(|m| self.scmi.malformed(m))?;
        Ok(n as usize)
    }

    /// Version, attributes, vendor, sub-vendor (optional), implementation version and protocol
    /// list, as Linux does at start-up.
    ///
    /// ```
    /// # use fwipc_scmi_virtio::platform::{Platform, PlatformConfig, direct::DirectTransport};
    /// # use fwipc_scmi_virtio::protocol::{Scmi, Config};
    /// # use fwipc_transport_api::StdClock;
    /// let platform = Platform::new(PlatformConfig::vhost_device_scmi_like(1));
    /// let scmi = Scmi::new(DirectTransport::new(platform), StdClock::new(), Config::default()).unwrap();
    /// let d = scmi.base().discover().unwrap();
    /// assert_eq!((d.version.major, d.vendor.as_str()), (2, Some("rust-vmm")));
    /// assert_eq!(d.sub_vendor, None);
    /// assert_eq!(d.protocols.as_slice(), &[0x15]);
    /// ```
    pub fn discover(&self) -> error::Result<Discovery> {
        let version = self.version()?;
        let attrs = self.attributes()?;
        let vendor = self.vendor()?;
        let sub_vendor = match self.sub_vendor() {
            Ok(n) => Some(n),
            Err(super::ScmiError::Status(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(Discovery {
            version,
            num_agents: attrs.num_agents,
            vendor,
            sub_vendor,
            implementation_version: self.implementation_version()?,
            protocols: self.protocols()?,
        })
    }

    /// All protocols the platform lists.
    pub fn protocols(&self) -> error::Result<ProtocolList> {
        let mut l = ProtocolList {
            ids: [0; 255],
            len: 0,
        };
        let n = self.discover_protocols(&mut l.ids)?;
        l.len = u8::try_from(n).map_err(|_| self.scmi.malformed(Malformed::OutOfRange))?;
        Ok(l)
    }
}
