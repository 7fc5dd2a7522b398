//! TEMPORARY stand-in with the metrics API (the prometheus-client registry replaces it).
#![allow(missing_docs, dead_code)]

use std::sync::Arc;
use std::time::Duration;

pub struct RequestLabels<'a> {
    pub route: &'a str,
    pub front: &'a str,
    pub back: &'a str,
    pub operation: &'a str,
    pub status: u16,
    pub code: &'a str,
}

#[derive(Clone, Copy)]
pub enum Direction {
    Upload,
    Download,
}

#[derive(Default)]
pub struct Metrics;

pub struct InFlight;

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics)
    }
    pub fn request(&self, _l: &RequestLabels<'_>, _d: Duration) {}
    pub fn upstream_duration(&self, _route: &str, _back: &str, _d: Duration) {}
    pub fn upstream_error(&self, _route: &str, _code: &str) {}
    pub fn file_bytes(&self, _route: &str, _direction: Direction, _bytes: u64) {}
    pub fn in_flight(self: &Arc<Self>, _route: &str) -> InFlight {
        InFlight
    }
    pub fn spooled(&self, _route: &str) {}
    pub fn config_reload(&self, _ok: bool) {}
    pub fn set_ledger_errors_source(&self, _f: Box<dyn Fn() -> u64 + Send + Sync>) {}
    pub fn render(&self) -> String {
        String::new()
    }
}
