//! The VideoCore `'echo'` test server (docs/protocols/vchiq.md §8) as a pure state machine: each
//! DATA message and bulk completion in, [`VcAction`]s out. The simulated VideoCore registers it
//! (vchiq_test expects 8 listeners; one handler instance per open service).

use alloc::vec::Vec;

use log::warn;

use crate::vchi::fourcc;
use crate::vchi::link::{VcAction, VcService};
use crate::vchi::test_wire::{EchoMagic, TestParams, SYNC_REPLY};

/// The reply to a message shorter than 4 bytes.
pub const ERR_SHORT: &[u8] = b"vchiq_test: message too short\0";
/// The reply to a message with an unknown magic.
pub const ERR_MAGIC: &[u8] = b"vchiq_test: unknown message magic\0";
/// The reply to a CONFIG that does not parse.
pub const ERR_CONFIG: &[u8] = b"vchiq_test: bad test_params\0";

/// Counters of one echo service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// DATA messages received.
    pub messages: u64,
    /// Error-string replies sent.
    pub errors: u64,
    /// Bulk blocks received.
    pub bulk_rx: u64,
    /// Bulk blocks echoed back and completed.
    pub bulk_tx: u64,
    /// Bulk transfers aborted.
    pub bulk_aborted: u64,
}

/// One `'echo'` service instance.
#[derive(Debug, Default)]
pub struct EchoServer {
    params: Option<TestParams>,
    received_blocks: u32,
    stats: EchoStats,
}

impl EchoServer {
    /// A fresh server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> EchoStats {
        self.stats
    }

    fn queue_rx(&self, out: &mut Vec<VcAction>) {
        if let Some(p) = self.params {
            if (self.received_blocks as i32) < p.iters.get() {
                out.push(VcAction::BulkRx {
                    len: p.blocksize.get() as usize,
                    tag: self.received_blocks,
                });
            }
        }
    }
}

impl VcService for EchoServer {
    fn fourcc(&self) -> u32 {
        fourcc::ECHO
    }

    fn on_close(&mut self, _out: &mut Vec<VcAction>) {
        self.params = None;
        self.received_blocks = 0;
    }

    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        self.stats.messages += 1;
        let Some(word) = msg.get(..4) else {
            self.stats.errors += 1;
            out.push(VcAction::Reply(ERR_SHORT.to_vec()));
            return;
        };
        let magic = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        match EchoMagic::from_i32(magic) {
            Some(EchoMagic::OneWay) => {}
            Some(EchoMagic::Async) => out.push(VcAction::Reply(Vec::new())),
            Some(EchoMagic::Sync) => out.push(VcAction::Reply(SYNC_REPLY.to_vec())),
            Some(EchoMagic::Echo) => out.push(VcAction::Reply(msg.to_vec())),
            Some(EchoMagic::Config) => match TestParams::parse(msg) {
                Ok(p) => {
                    self.params = Some(p);
                    self.received_blocks = 0;
                    out.push(VcAction::Reply(SYNC_REPLY.to_vec()));
                    self.queue_rx(out);
                }
                Err(e) => {
                    warn!(target: "vchi::echo", "bad CONFIG: {e}");
                    self.stats.errors += 1;
                    out.push(VcAction::Reply(ERR_CONFIG.to_vec()));
                }
            },
            Some(EchoMagic::Error) | None => {
                self.stats.errors += 1;
                out.push(VcAction::Reply(ERR_MAGIC.to_vec()));
            }
        }
    }

    fn on_bulk_rx(&mut self, tag: u32, data: Option<&[u8]>, out: &mut Vec<VcAction>) {
        let Some(data) = data else {
            self.stats.bulk_aborted += 1;
            return;
        };
        self.stats.bulk_rx += 1;
        self.received_blocks += 1;
        if self.params.is_some_and(|p| p.echo.get() != 0) {
            out.push(VcAction::BulkTx {
                data: data.to_vec(),
                tag,
            });
        }
        self.queue_rx(out);
    }

    fn on_bulk_tx(&mut self, _tag: u32, ok: bool, _out: &mut Vec<VcAction>) {
        if ok {
            self.stats.bulk_tx += 1;
        } else {
            self.stats.bulk_aborted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn one(s: &mut EchoServer, m: &[u8]) -> Vec<VcAction> {
        let mut out = Vec::new();
        s.on_message(m, &mut out);
        out
    }

    #[test]
    fn message_kinds() {
        let mut s = EchoServer::new();
        assert!(one(&mut s, &EchoMagic::OneWay.bytes()).is_empty());
        assert_eq!(
            one(&mut s, &EchoMagic::Async.bytes()),
            [VcAction::Reply(Vec::new())]
        );
        assert_eq!(
            one(&mut s, &EchoMagic::Sync.bytes()),
            [VcAction::Reply(b"\0".to_vec())]
        );
        let m = [5, 0, 0, 0, 9, 8, 7];
        assert_eq!(one(&mut s, &m), [VcAction::Reply(m.to_vec())]);
        assert_eq!(one(&mut s, &[5, 0]), [VcAction::Reply(ERR_SHORT.to_vec())]);
        assert_eq!(
            one(&mut s, &[9, 0, 0, 0]),
            [VcAction::Reply(ERR_MAGIC.to_vec())]
        );
        assert_eq!(
            one(&mut s, &[4, 0, 0, 0]),
            [VcAction::Reply(ERR_CONFIG.to_vec())]
        );
        assert_eq!(s.stats().errors, 3);
    }

    #[test]
    fn config_drives_bulk_echo_until_iters() {
        let mut s = EchoServer::new();
        let out = one(&mut s, TestParams::bulk(16, 2, true).as_bytes());
        assert_eq!(
            out,
            [
                VcAction::Reply(b"\0".to_vec()),
                VcAction::BulkRx { len: 16, tag: 0 }
            ]
        );
        let mut out = Vec::new();
        s.on_bulk_rx(0, Some(&[1; 16]), &mut out);
        assert_eq!(
            out,
            [
                VcAction::BulkTx {
                    data: [1; 16].to_vec(),
                    tag: 0
                },
                VcAction::BulkRx { len: 16, tag: 1 }
            ]
        );
        let mut out = Vec::new();
        s.on_bulk_rx(1, Some(&[2; 16]), &mut out);
        assert_eq!(
            out,
            [VcAction::BulkTx {
                data: [2; 16].to_vec(),
                tag: 1
            }]
        );
    }
}
