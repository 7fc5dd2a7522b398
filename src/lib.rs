//! casegate: a reverse proxy that translates "attach a file to a case" uploads between
//! Thalamus v4, Tines v2, Case IQ and Kibana Cases (see `../shared/SPEC.md`).
//!
//! The crate is a library with a thin binary (`main.rs`) on top, so integration tests,
//! benchmarks and fuzz targets drive the same code the binary runs.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(clippy::all)]

pub mod admin;
pub mod clock;
pub mod coarse;
pub mod codec;
pub mod config;
pub mod context;
pub mod dialect;
pub mod emulator;
pub mod error;
pub mod forward;
pub mod inbound;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod passthrough;
pub mod pool;
pub mod read;
pub mod router;
pub mod secret;
pub mod server;
pub mod service;
pub mod spool;
pub mod tls;
pub mod upload;
pub mod upstream;
pub mod workers;

/// Boxes the future `make` builds, in its box. A future is as large as its largest state
/// (several KiB for an upload's), however little its first state holds; `Box::pin(f())`
/// builds it on the stack and then copies all of it into the new box. Here the box is
/// allocated first, so the future can be built where it stays.
#[inline(always)]
pub(crate) fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}
