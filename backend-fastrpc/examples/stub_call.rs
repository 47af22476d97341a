//! Declare a FastRPC interface once with [`fastrpc_interface!`], serve its skeleton on the
//! simulated DSP, and call it through the generated stub from the application-processor (AP)
//! side.
//!
//! ```text
//! cargo run --release -p fwipc-fastrpc --example stub_call
//! ```
//!
//! # What the macro generates
//!
//! `fastrpc_interface! { pub interface pixels { stub PixelsStub; skel PixelsImpl,
//! pixels_skel_invoke; fn ... } }` expands to a module `pixels` holding:
//!
//! - `pixels::PixelsStub<I>`: the client. A plain struct with two public fields, `invoker` (how a
//!   call reaches the DSP, any
//!   [`Invoker`](fwipc_fastrpc::stubskel::Invoker); here the FastRPC session itself, which waits as its
//!   [`CallWait`](fwipc_fastrpc::CallWait) says) and
//!   `handle` (the remote object's handle). It has one method per `fn`, taking the `in` scalars,
//!   then the `in_bufs` as `&[u8]`, then the `out_bufs` as `&mut [u8]`, and returning the `out`
//!   scalars as a tuple (a one-element tuple `(x,)` when there is a single output).
//! - `pixels::PixelsImpl`: the trait the server implements, same argument order, returning
//!   `Result<(outs...), i32>` where the error is an AEE status (see [`aee::dsp`]).
//! - `pixels::pixels_skel_invoke`: the skeleton function. It unmarshals a call, checks the buffer
//!   counts and sizes, dispatches to the `PixelsImpl` method and marshals the outputs back. Its
//!   return value is the call's `retval`.
//! - `pixels::ids`: the method ids as constants.
//!
//! Method ids start at 2 like the simulator's own calculator (ids 0 and 1 are `open`/`close` in
//! qaic's convention for handle-based interfaces). Ids of 31 and above travel as method 31 with
//! the real id in the first word of the scalar block (the "escape"); `version = 35` below uses it.
//!
//! # Serving the skeleton on the simulated DSP
//!
//! [`SimSystem`] is a whole simulated system: the bus/SMMU, the datagram link, a DSP thread and
//! the AP-side [`Channel`](fwipc_fastrpc::Channel). Any generated skeleton becomes a DSP object by
//! wrapping it in [`SkelObject`] and registering it with `SimDsp::add_object(handle, ..)`.
//!
//! # Which handle
//!
//! On the simulated DSP, handles 0..10 are the static handles: 1 is process control (user calls
//! on it are refused by the AP), 2 is the DSP-utilities object, 3 is the reverse-RPC listener.
//! [`SimSystem::new`] already hosts the conformance echo object at `0x20`
//! ([`ECHO_HANDLE`]), the generated calculator at `0x21` ([`CALC_HANDLE`]) and the reverse-calling
//! key/value client at `0x22` ([`KV_HANDLE`]); `0x50` is the *AP-side* service those reverse calls
//! target. `add_object` silently replaces whatever was registered at a handle, so we use `0x30`,
//! which nothing in the simulator uses.

use std::error::Error;
use std::time::Duration;

use fwipc_fastrpc::error::aee;
use fwipc_fastrpc::fastrpc_interface;
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::{SkelObject, CALC_HANDLE, ECHO_HANDLE, KV_HANDLE};
use fwipc_fastrpc::{AeeError, CallWait, FastRpcError};
use fwipc_transport_api::{Completion, Wait};

fastrpc_interface! {
    /// A tiny pixel-processing interface: the kind of work one offloads to a DSP.
    pub interface pixels {
        stub PixelsStub;
        skel PixelsImpl, pixels_skel_invoke;
        /// Sum of all bytes of `data`, plus `bias`.
        fn sum = 2 (in { bias: u32 } in_bufs { data } out { total: u64 } out_bufs {});
        /// `dst[i] = min(255, src[i] * gain / 16)`; returns how many pixels were clipped at 255.
        fn brighten = 3 (in { gain: u16 } in_bufs { src } out { clipped: u32 } out_bufs { dst });
        /// Interface version. Id 35 > 31: sent through the method-31 escape.
        fn version = 35 (in {} in_bufs {} out { major: u16, minor: u16 } out_bufs {});
    }
}

/// The DSP-side implementation of `pixels`. It runs on the simulated DSP's thread.
struct Pixels;

impl pixels::PixelsImpl for Pixels {
    fn sum(&mut self, bias: u32, data: &[u8]) -> Result<(u64,), i32> {
        Ok((u64::from(bias) + data.iter().map(|b| u64::from(*b)).sum::<u64>(),))
    }

    fn brighten(&mut self, gain: u16, src: &[u8], dst: &mut [u8]) -> Result<(u32,), i32> {
        // Errors are AEE statuses; the stub returns them as `FastRpcError::Aee`.
        if dst.len() < src.len() {
            return Err(aee::dsp(aee::EBUFFERTOOSMALL));
        }
        let mut clipped = 0;
        for (d, s) in dst.iter_mut().zip(src) {
            let v = u32::from(*s) * u32::from(gain) / 16;
            if v > 255 {
                clipped += 1;
            }
            *d = v.min(255) as u8;
        }
        Ok((clipped,))
    }

    fn version(&mut self) -> Result<(u16, u16), i32> {
        Ok((1, 4))
    }
}

/// The remote handle our object lives at (see the module docs for why `0x30`).
const PIXELS_HANDLE: u32 = 0x30;

/// Turn a failed check into an error (so `main` exits non-zero).
fn check(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        println!("  ok: {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// An outcome for printing (`FastRpcError`'s `Display` shows AEE codes in hex).
fn show<T: std::fmt::Debug>(r: &Result<T, FastRpcError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e})"),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // 1. A simulated system (DSP thread + AP channel). In interrupt mode the DSP's answers are
    //    delivered straight into the channel's receive path, like an rpmsg callback.
    let sys = SimSystem::new(SimSystem::default_config(), Completion::Interrupt);
    check(
        ![ECHO_HANDLE, CALC_HANDLE, KV_HANDLE].contains(&PIXELS_HANDLE),
        "our handle is not one the simulator already uses",
    )?;

    // 2. Serve the skeleton: wrap implementation + skel function, register it at our handle.
    sys.dsp.add_object(
        PIXELS_HANDLE,
        Box::new(SkelObject::new(
            Pixels,
            pixels::pixels_skel_invoke::<Pixels>,
        )),
    );
    println!("DSP: serving `pixels` at handle {PIXELS_HANDLE:#x}");

    // 3. AP side: open a session (a context bank) and attach it to the DSP's root process. How
    //    its blocking calls wait is chosen once, here: 2 s per call, yielding between polls.
    let wait = CallWait::new(
        sys.clock.clone(),
        Duration::from_secs(2),
        Wait::SpinThenYield {
            spins: 16,
            relax: &fwipc_transport_api::yield_now,
        },
    );
    let session = sys.channel.open_session(wait)?;
    session.attach()?;
    println!(
        "AP: session on stream id {} attached (client id {})",
        session.sid(),
        session.client_id()
    );

    // 4. The stub: how calls are made (blocking invokes on the session) and which remote
    //    object they go to.
    let stub = pixels::PixelsStub {
        invoker: &session,
        handle: PIXELS_HANDLE,
    };

    // 5. Call every method and check the results.
    let data: Vec<u8> = (0..=255u8).collect();
    let (total,) = stub.sum(1000, &data)?;
    println!("sum(bias 1000, 0..=255) = {total}");
    check(total == 1000 + 255 * 256 / 2, "sum")?;

    let src = [0u8, 16, 100, 200, 255];
    let mut dst = [0u8; 5];
    let (clipped,) = stub.brighten(24, &src, &mut dst)?; // gain 24/16 = 1.5
    println!("brighten(x1.5, {src:?}) = {dst:?}, {clipped} clipped");
    check(dst == [0, 24, 150, 255, 255] && clipped == 2, "brighten")?;

    let (major, minor) = stub.version()?;
    println!(
        "version() = {major}.{minor} (method {})",
        pixels::ids::version
    );
    check(
        (major, minor) == (1, 4),
        "version through the method-31 escape",
    )?;

    // 6. Errors come back typed: a too-small output buffer is refused by our implementation
    //    with AEE_EBUFFERTOOSMALL...
    let mut small = [0u8; 2];
    let r = stub.brighten(16, &src, &mut small);
    println!("brighten into a 2-byte buffer: {}", show(&r));
    check(
        r == Err(FastRpcError::Aee(AeeError(aee::dsp(aee::EBUFFERTOOSMALL)))),
        "implementation error reaches the caller",
    )?;
    // ...and a method the object does not have is refused by the skeleton with
    // AEE_EUNSUPPORTED (called here through the raw `Invoker`, as a mismatched stub would).
    let r = stub.invoker.invoke(PIXELS_HANDLE, 9, &mut []);
    println!("raw invoke of unknown method 9: {}", show(&r));
    check(
        r == Err(FastRpcError::Aee(AeeError(aee::dsp(aee::EUNSUPPORTED)))),
        "unknown method refused by the skeleton",
    )?;

    // 7. Every payload buffer went back to the session's pool.
    let st = session.stats();
    println!(
        "session: {} calls completed (the attach + 5 invokes), {}/{} payload buffers free",
        st.completed, st.pool_free, st.pool_capacity
    );
    check(st.pool_free == st.pool_capacity, "no buffer leaked")?;
    println!("stub_call: all checks passed");
    Ok(())
}
