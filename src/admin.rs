//! TEMPORARY stand-in with the admin listener's API.
#![allow(missing_docs, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use crate::metrics::Metrics;

pub trait Readiness: Send + Sync + 'static {
    fn ready(&self) -> Result<(), String>;
}

pub struct Admin {
    addr: SocketAddr,
}

impl Admin {
    pub async fn start(
        addr: SocketAddr,
        _metrics: Arc<Metrics>,
        _ready: Arc<dyn Readiness>,
    ) -> Result<Admin, String> {
        Ok(Admin { addr })
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub async fn shutdown(self) {}
}
