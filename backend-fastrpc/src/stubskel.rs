//! `fastrpc_interface!`: write an interface's signature once, get a typed client stub and a
//! server skeleton that marshal through the scalars format the way qaic-generated code does
//! (docs/protocols/fastrpc.md §9):
//!
//! - in-buffer 0 is *primIn*: the scalar inputs at natural alignment, then the u32 length of
//!   every in-buffer and every out-buffer (present when non-empty);
//! - out-buffer 0 is *primROut*: the scalar outputs (absent when there are none);
//! - then one slot per in-buffer and per out-buffer;
//! - methods ≥ 31 are sent as method 31 with the real id in the first u32 of primIn;
//! - the skel checks the four counts and primIn/primROut sizes (`AEE_EBADPARM`) and answers
//!   unknown methods with `AEE_EUNSUPPORTED`.
//!
//! Parameter order inside primIn is "scalars, then buffer lengths" (as if the IDL declared the
//! scalars first); qaic follows declaration order, so an interface whose IDL interleaves them
//! must be declared in that order here to stay wire-compatible.
//!
//! ```
//! use fwipc_fastrpc::fastrpc_interface;
//! fastrpc_interface! {
//!     /// A calculator.
//!     pub interface calc {
//!         stub CalcStub;
//!         skel CalcImpl, calc_skel_invoke;
//!         /// Sum of the bytes of `data`.
//!         fn sum = 2 (in {} in_bufs { data } out { total: u64 } out_bufs {});
//!         /// Larger of two.
//!         fn max = 3 (in { a: i32, b: i32 } in_bufs {} out { m: i32 } out_bufs {});
//!     }
//! }
//!
//! // The server implements the generated trait `calc::CalcImpl`...
//! struct Calc;
//! impl calc::CalcImpl for Calc {
//!     fn sum(&mut self, data: &[u8]) -> Result<(u64,), i32> {
//!         Ok((data.iter().map(|b| u64::from(*b)).sum(),))
//!     }
//!     fn max(&mut self, a: i32, b: i32) -> Result<(i32,), i32> {
//!         Ok((a.max(b),))
//!     }
//! }
//!
//! // ...and `calc::calc_skel_invoke` serves it. Here an in-process `Invoker` hands each call
//! // straight to the skeleton; a program calls the DSP through a `Session` (itself an
//! // `Invoker`), and the simulated DSP serves a skeleton wrapped in
//! // `sim::objects::SkelObject` (see the `stub_call` example).
//! use std::cell::RefCell;
//! use fwipc_fastrpc::stubskel::Invoker;
//! use fwipc_fastrpc::{AeeError, Arg, FastRpcError, Scalars};
//!
//! struct Direct(RefCell<Calc>);
//! impl Invoker for Direct {
//!     fn invoke(&self, _handle: u32, method: u32, args: &mut [Arg<'_>]) -> fwipc_fastrpc::Result<()> {
//!         let mut ins: Vec<&[u8]> = Vec::new();
//!         let mut outs: Vec<&mut [u8]> = Vec::new();
//!         for a in args.iter_mut() {
//!             match a {
//!                 Arg::In(d) => ins.push(d),
//!                 Arg::Out(d) => outs.push(d),
//!                 _ => return Err(FastRpcError::InvalidArgument),
//!             }
//!         }
//!         let sc = Scalars::new(method, ins.len() as u32, outs.len() as u32, 0, 0)?;
//!         match calc::calc_skel_invoke(&mut *self.0.borrow_mut(), sc, &ins, &mut outs) {
//!             0 => Ok(()),
//!             r => Err(FastRpcError::Aee(AeeError(r))),
//!         }
//!     }
//! }
//!
//! // The client: the generated stub, over any invoker, addressed to the object's handle.
//! let stub = calc::CalcStub { invoker: Direct(RefCell::new(Calc)), handle: 0x30 };
//! assert_eq!(stub.sum(&[1, 2, 3])?, (6,));
//! assert_eq!(stub.max(-3, 9)?, (9,));
//! # Ok::<(), FastRpcError>(())
//! ```
//!
//! Generated names, for `interface calc { stub CalcStub; skel CalcImpl, calc_skel_invoke; .. }`:
//! the module `calc` holds `CalcStub<I>` (fields `invoker` and `handle`, one method per `fn`:
//! `in` scalars, then `in_bufs` as `&[u8]`, then `out_bufs` as `&mut [u8]`; returns the `out`
//! scalars as a tuple) and its async twin `AsyncStub<I>`, the trait `CalcImpl` (same arguments,
//! `Result<(outs..), i32>` with an AEE status as the error), the function `calc_skel_invoke` and
//! the method ids in `calc::ids`.
//!
//! The async face is the module's `AsyncStub<I>` (same fields) over an [`AsyncInvoker`]
//! (`&Session` is one): every method is an `async fn` with the same arguments and result, on the
//! completion machinery of [`Session::invoke_async`] (woken by the DSP's answer on a push-style
//! link; the session's timeout enforced when the future is polled; dropping a pending future
//! cancels the call):
//!
//! ```
//! use fwipc_fastrpc::sim::fixture::SimSystem;
//! use fwipc_fastrpc::sim::objects::{calculator, CALC_HANDLE};
//! use fwipc_transport_api::{block_on_polling, Completion};
//!
//! // The simulated DSP serves the generated calculator skeleton at `CALC_HANDLE`.
//! let sys = SimSystem::new(SimSystem::default_config(), Completion::Interrupt);
//! let session = sys.attached_session();
//! let stub = calculator::AsyncStub { invoker: &session, handle: CALC_HANDLE };
//! // Any executor drives the future; `block_on_polling` is the executor-free one.
//! let (m,) = block_on_polling(stub.max(-3, 9))?;
//! assert_eq!(m, 9);
//! # Ok::<(), fwipc_fastrpc::FastRpcError>(())
//! ```

use core::future::Future;

use crate::error::Result;
use crate::session::{Arg, Session};

/// A scalar type that can travel in primIn/primROut (little-endian, natural alignment).
pub trait Prim: Copy {
    /// Size in bytes.
    const SIZE: usize;
    /// Alignment in bytes.
    const ALIGN: usize;
    /// Write at the start of `out` (which holds at least `SIZE` bytes).
    fn put(self, out: &mut [u8]);
    /// Read from the start of `b` (which holds at least `SIZE` bytes).
    fn get(b: &[u8]) -> Self;
}

macro_rules! prim {
    ($($t:ty),*) => {$(
        impl Prim for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            const ALIGN: usize = core::mem::align_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; core::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
prim!(u8, u16, u32, u64, i8, i16, i32, i64);

/// Size of a packed primitive block: optional escape id, `fields` (size, align) at natural
/// alignment, then `nlens` u32 lengths, rounded up to the largest alignment (the C struct's
/// tail padding; qaic's exact rounding is **(unverified)**).
pub const fn packed_len(escape: bool, fields: &[(usize, usize)], nlens: usize) -> usize {
    let mut off: usize = if escape { 4 } else { 0 };
    let mut max_align: usize = if escape || nlens > 0 { 4 } else { 1 };
    let mut i = 0;
    while i < fields.len() {
        let (size, align) = fields[i];
        off = off.div_ceil(align) * align + size;
        if align > max_align {
            max_align = align;
        }
        i += 1;
    }
    if nlens > 0 {
        off = off.div_ceil(4) * 4 + 4 * nlens;
    }
    off.div_ceil(max_align) * max_align
}

/// Number of names (macro helper).
pub const fn count(names: &[&str]) -> usize {
    names.len()
}

/// Write `v` at the next naturally aligned offset from `cur`; returns the new cursor. Returns
/// `usize::MAX` (and writes nothing) if it does not fit.
pub fn put<T: Prim>(buf: &mut [u8], cur: usize, v: T) -> usize {
    let at = cur.div_ceil(T::ALIGN) * T::ALIGN;
    match buf.get_mut(at..at + T::SIZE) {
        Some(dst) => {
            v.put(dst);
            at + T::SIZE
        }
        None => usize::MAX,
    }
}

/// Read a `T` at the next naturally aligned offset from `cur`; `None` if out of range (remote
/// input: never panics).
pub fn get<T: Prim>(buf: &[u8], cur: usize) -> Option<(T, usize)> {
    let at = cur.checked_next_multiple_of(T::ALIGN)?;
    let src = buf.get(at..at.checked_add(T::SIZE)?)?;
    Some((T::get(src), at + T::SIZE))
}

/// A fixed-capacity argument list on the stack (no allocation).
pub struct ArgList<'a, const N: usize> {
    items: [Arg<'a>; N],
    n: usize,
}

impl<'a, const N: usize> Default for ArgList<'a, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const N: usize> ArgList<'a, N> {
    /// Empty.
    pub fn new() -> Self {
        ArgList {
            items: core::array::from_fn(|_| Arg::In(&[])),
            n: 0,
        }
    }
    /// Append (ignored beyond `N`, which the generator sizes exactly).
    pub fn push(&mut self, a: Arg<'a>) {
        if let Some(slot) = self.items.get_mut(self.n) {
            *slot = a;
            self.n += 1;
        }
    }
    /// The arguments.
    pub fn as_mut_slice(&mut self) -> &mut [Arg<'a>] {
        &mut self.items[..self.n]
    }
}

/// What a stub calls: one blocking invoke.
pub trait Invoker {
    /// Invoke `method` on `handle` with `args` (out-buffers are filled on success).
    fn invoke(&self, handle: u32, method: u32, args: &mut [Arg<'_>]) -> Result<()>;
}

/// A session is the blocking [`Invoker`]: each call waits as the session's
/// [`CallWait`](crate::CallWait) says.
impl Invoker for Session {
    fn invoke(&self, handle: u32, method: u32, args: &mut [Arg<'_>]) -> Result<()> {
        Session::invoke(self, handle, method, args)
    }
}

impl<I: Invoker + ?Sized> Invoker for &I {
    fn invoke(&self, handle: u32, method: u32, args: &mut [Arg<'_>]) -> Result<()> {
        (**self).invoke(handle, method, args)
    }
}

/// What an async stub (`AsyncStub`, generated beside every stub) calls: one invoke whose
/// completion is a future, on the same completion machinery as the blocking call.
pub trait AsyncInvoker {
    /// Queue a call of `method` on `handle` with `args`; the future resolves as
    /// [`Invoker::invoke`] returns, with the out-buffers filled. Dropping it while pending
    /// cancels the call.
    fn invoke_async(
        &self,
        handle: u32,
        method: u32,
        args: &mut [Arg<'_>],
    ) -> impl Future<Output = Result<()>>;
}

/// A session is the async [`AsyncInvoker`] through [`Session::invoke_async`]: the future is
/// woken by the DSP's answer on a push-style link, and its deadline is the session's
/// [`CallWait`](crate::CallWait) timeout, enforced when it is polled (see
/// [`InvokeFuture`](crate::InvokeFuture)). A refused send (`Busy`, `TooLarge`...) is the
/// future's output.
impl AsyncInvoker for Session {
    fn invoke_async(
        &self,
        handle: u32,
        method: u32,
        args: &mut [Arg<'_>],
    ) -> impl Future<Output = Result<()>> {
        let started = Session::invoke_async(self, handle, method, args);
        async move { started?.await }
    }
}

impl<I: AsyncInvoker + ?Sized> AsyncInvoker for &I {
    fn invoke_async(
        &self,
        handle: u32,
        method: u32,
        args: &mut [Arg<'_>],
    ) -> impl Future<Output = Result<()>> {
        (**self).invoke_async(handle, method, args)
    }
}

/// A blocking [`Invoker`] for one thread (`tid`) that resumes that thread's interrupted call
/// instead of re-sending it (see [`Session::start_or_resume`]).
#[derive(Clone, Copy)]
pub struct ResumableInvoker<'a> {
    /// The session (its [`CallWait`](crate::CallWait) says how calls wait).
    pub session: &'a Session,
    /// The calling thread's id.
    pub tid: i32,
}

impl Invoker for ResumableInvoker<'_> {
    fn invoke(&self, handle: u32, method: u32, args: &mut [Arg<'_>]) -> Result<()> {
        self.session
            .invoke_resumable(handle, method, args, self.tid)
    }
}

/// Declare an interface; see the [module docs](crate::stubskel).
#[macro_export]
macro_rules! fastrpc_interface {
    (
        $(#[$meta:meta])*
        $vis:vis interface $module:ident {
            stub $Stub:ident;
            skel $Impl:ident, $skel_fn:ident;
            $(
                $(#[$mmeta:meta])*
                fn $method:ident = $id:literal (
                    in { $($iname:ident : $ity:ty),* $(,)? }
                    in_bufs { $($ibname:ident),* $(,)? }
                    out { $($oname:ident : $oty:ty),* $(,)? }
                    out_bufs { $($obname:ident),* $(,)? }
                );
            )*
        }
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments, unused_mut, unused_variables, unused_assignments)]
        $vis mod $module {
            #[allow(unused_imports)]
            use $crate::stubskel::{count, get, packed_len, put, AsyncInvoker, Invoker, Prim};
            use $crate::wire::scalars::{Scalars, METHOD_ESCAPE};
            use $crate::error::{aee, FastRpcError};

            /// Method ids, in declaration order.
            #[allow(dead_code)]
            pub mod ids {
                $( #[allow(non_upper_case_globals, missing_docs)] pub const $method: u32 = $id; )*
            }

            /// The typed client stub.
            pub struct $Stub<I> {
                /// How calls are made.
                pub invoker: I,
                /// The remote object's handle.
                pub handle: u32,
            }

            impl<I: Invoker> $Stub<I> {
                $(
                    $(#[$mmeta])*
                    pub fn $method(
                        &self,
                        $($iname: $ity,)*
                        $($ibname: &[u8],)*
                        $($obname: &mut [u8],)*
                    ) -> Result<($($oty,)*), FastRpcError> {
                        $crate::__fastrpc_stub_call!(
                            $id, in { $($iname: $ity),* } in_bufs { $($ibname),* }
                            out { $($oname: $oty),* } out_bufs { $($obname),* },
                            self.handle, |handle, method, args| self.invoker.invoke(handle, method, args)
                        )
                    }
                )*
            }

            /// The async twin of the client stub: the same methods, each an `async fn` whose
            /// future resolves when the DSP answers (the invoker's
            /// [`AsyncInvoker::invoke_async`]). Dropping a pending future cancels its call.
            pub struct AsyncStub<I> {
                /// How calls are made.
                pub invoker: I,
                /// The remote object's handle.
                pub handle: u32,
            }

            // An interface whose users take one face only leaves the other unused.
            #[allow(dead_code)]
            impl<I: AsyncInvoker> AsyncStub<I> {
                $(
                    $(#[$mmeta])*
                    pub async fn $method(
                        &self,
                        $($iname: $ity,)*
                        $($ibname: &[u8],)*
                        $($obname: &mut [u8],)*
                    ) -> Result<($($oty,)*), FastRpcError> {
                        $crate::__fastrpc_stub_call!(
                            $id, in { $($iname: $ity),* } in_bufs { $($ibname),* }
                            out { $($oname: $oty),* } out_bufs { $($obname),* },
                            self.handle, |handle, method, args| self.invoker.invoke_async(handle, method, args).await
                        )
                    }
                )*
            }

            /// The server side: implement this and dispatch with the skel function.
            pub trait $Impl {
                $(
                    $(#[$mmeta])*
                    fn $method(
                        &mut self,
                        $($iname: $ity,)*
                        $($ibname: &[u8],)*
                        $($obname: &mut [u8],)*
                    ) -> Result<($($oty,)*), i32>;
                )*
            }

            /// The skeleton: unmarshal, check, dispatch, marshal. Returns the `retval`.
            pub fn $skel_fn<T: $Impl + ?Sized>(
                obj: &mut T,
                sc: Scalars,
                ins: &[&[u8]],
                outs: &mut [&mut [u8]],
            ) -> i32 {
                let bad = aee::dsp(aee::EBADPARM);
                let wire_method = sc.method();
                let real = if wire_method == METHOD_ESCAPE {
                    match ins.first().and_then(|b| get::<u32>(b, 0)) {
                        Some((m, _)) => m,
                        None => return bad,
                    }
                } else {
                    wire_method
                };
                $(
                    if real == $id && (($id >= METHOD_ESCAPE) == (wire_method == METHOD_ESCAPE)) {
                        const ESC: bool = $id >= METHOD_ESCAPE;
                        const N_IB: usize = count(&[$(stringify!($ibname)),*]);
                        const N_OB: usize = count(&[$(stringify!($obname)),*]);
                        const PRIM_IN: usize = packed_len(
                            ESC, &[$((<$ity as Prim>::SIZE, <$ity as Prim>::ALIGN)),*], N_IB + N_OB);
                        const PRIM_OUT: usize = packed_len(
                            false, &[$((<$oty as Prim>::SIZE, <$oty as Prim>::ALIGN)),*], 0);
                        let want_in = usize::from(PRIM_IN > 0) + N_IB;
                        let want_out = usize::from(PRIM_OUT > 0) + N_OB;
                        if sc.inbufs() != want_in || sc.outbufs() != want_out
                            || sc.inhandles() != 0 || sc.outhandles() != 0
                            || ins.len() != want_in || outs.len() != want_out {
                            return bad;
                        }
                        let pin: &[u8] = if PRIM_IN > 0 { ins[0] } else { &[] };
                        if pin.len() < PRIM_IN {
                            return bad;
                        }
                        let mut cur = if ESC { 4 } else { 0 };
                        $(
                            let $iname: $ity = match get::<$ity>(pin, cur) {
                                Some((v, c)) => { cur = c; v }
                                None => return bad,
                            };
                        )*
                        let mut ib = usize::from(PRIM_IN > 0);
                        $(
                            let $ibname: &[u8] = ins[ib];
                            ib += 1;
                            match get::<u32>(pin, cur) {
                                Some((l, c)) if l as usize == $ibname.len() => cur = c,
                                _ => return bad,
                            }
                        )*
                        let (po, rest) = outs.split_at_mut(usize::from(PRIM_OUT > 0));
                        if po.first().is_some_and(|p| p.len() < PRIM_OUT) {
                            return bad;
                        }
                        let mut it = rest.iter_mut();
                        $(
                            let $obname: &mut [u8] = match it.next() {
                                Some(b) => &mut **b,
                                None => return bad,
                            };
                            match get::<u32>(pin, cur) {
                                Some((l, c)) if l as usize == $obname.len() => cur = c,
                                _ => return bad,
                            }
                        )*
                        return match obj.$method($($iname,)* $($ibname,)* $($obname,)*) {
                            Ok(($($oname,)*)) => {
                                if let Some(p) = po.first_mut() {
                                    let mut cur = 0usize;
                                    $( cur = put(p, cur, $oname); )*
                                }
                                0
                            }
                            Err(code) => code,
                        };
                    }
                )*
                aee::dsp(aee::EUNSUPPORTED)
            }
        }
    };
}

/// The body of one generated stub method (a [`fastrpc_interface!`](crate::fastrpc_interface)
/// helper): marshal, make the call `$call` with `$handle`, `$method` and `$args` bound, unmarshal.
#[doc(hidden)]
#[macro_export]
macro_rules! __fastrpc_stub_call {
    (
        $id:literal, in { $($iname:ident : $ity:ty),* } in_bufs { $($ibname:ident),* }
        out { $($oname:ident : $oty:ty),* } out_bufs { $($obname:ident),* },
        $handle_value:expr, |$handle:ident, $method:ident, $args:ident| $call:expr
    ) => {{
        const ESC: bool = $id >= $crate::wire::scalars::METHOD_ESCAPE;
        const N_IB: usize = $crate::stubskel::count(&[$(stringify!($ibname)),*]);
        const N_OB: usize = $crate::stubskel::count(&[$(stringify!($obname)),*]);
        const PRIM_IN: usize = $crate::stubskel::packed_len(
            ESC, &[$((<$ity as $crate::stubskel::Prim>::SIZE, <$ity as $crate::stubskel::Prim>::ALIGN)),*], N_IB + N_OB);
        const PRIM_OUT: usize = $crate::stubskel::packed_len(
            false, &[$((<$oty as $crate::stubskel::Prim>::SIZE, <$oty as $crate::stubskel::Prim>::ALIGN)),*], 0);
        let mut prim_in = [0u8; PRIM_IN];
        let mut cur = 0usize;
        if ESC {
            cur = $crate::stubskel::put(&mut prim_in, cur, $id as u32);
        }
        $( cur = $crate::stubskel::put(&mut prim_in, cur, $iname); )*
        $( cur = $crate::stubskel::put(&mut prim_in, cur, u32::try_from($ibname.len())
            .map_err(|_| $crate::FastRpcError::TooLarge)?); )*
        $( cur = $crate::stubskel::put(&mut prim_in, cur, u32::try_from($obname.len())
            .map_err(|_| $crate::FastRpcError::TooLarge)?); )*
        if cur == usize::MAX {
            return Err($crate::FastRpcError::InvalidArgument);
        }
        let mut prim_out = [0u8; PRIM_OUT];
        {
            let mut args = $crate::stubskel::ArgList::<{ 2 + N_IB + N_OB }>::new();
            if PRIM_IN > 0 {
                args.push($crate::Arg::In(&prim_in));
            }
            $( args.push($crate::Arg::In($ibname)); )*
            if PRIM_OUT > 0 {
                args.push($crate::Arg::Out(&mut prim_out));
            }
            $( args.push($crate::Arg::Out($obname)); )*
            let method = if ESC { $crate::wire::scalars::METHOD_ESCAPE } else { $id };
            let ($handle, $method, $args) = ($handle_value, method, args.as_mut_slice());
            $call?;
        }
        let mut cur = 0usize;
        $(
            let $oname: $oty = match $crate::stubskel::get::<$oty>(&prim_out, cur) {
                Some((v, c)) => { cur = c; v }
                None => return Err($crate::FastRpcError::InvalidArgument),
            };
        )*
        Ok(($($oname,)*))
    }};
}

#[cfg(test)]
mod tests;
