//! The Prometheus metrics of SPEC section 8: what the request path counts, and their
//! exposition for the admin listener's `/metrics`.
//!
//! One [`Metrics`] is made at start-up and shared (in an `Arc`) by everything that counts:
//! the request path calls [`Metrics::request`], [`Metrics::file_bytes`] and the rest as
//! requests finish, and the admin listener calls [`Metrics::render`] on each scrape. The
//! series live in `prometheus-client` families (atomics behind a read-mostly lock, one
//! series per label set); some are read only at scrape time: the ledger's figures (its
//! errors, whether it is available, the rows waiting to be written and those given up,
//! from [`Metrics::set_ledger_source`]) and the standard `process_*` families, read from
//! `/proc/self` (Linux; elsewhere, or when a file cannot be read, those series are left
//! out).
//!
//! The exposition is the Prometheus text format, version 0.0.4 ([`CONTENT_TYPE`]), which
//! every Prometheus-compatible scraper reads. Label values come from casegate's own
//! configuration and code (route and dialect names, operations, statuses, error codes),
//! never from a client's bytes, so the number of series stays bounded.

use std::fmt;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of the duration histograms' buckets (`+Inf` is added).
///
/// Roughly exponential (x2 to x2.5 a step, Prometheus' default 5 ms .. 10 s ladder) and
/// stretched to 60 s, since a large upload through a slow upstream takes tens of seconds.
/// 13 buckets keep each series at 16 lines.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/self/stat`. It is 100 on every
/// architecture casegate runs on (Prometheus' own `procfs` assumes the same).
const USER_HZ: f64 = 100.0;

/// Labels of one finished request.
///
/// `route` is "-" when no route matched; `front`/`back` are dialect names or "-";
/// `operation` is e.g. "upload", "list", "get", "info", "download", "delete", "comments",
/// "token", "passthrough" or "-"; `code` is the `Casegate-Error` code, or "-" on success.
#[derive(Clone, Copy, Debug)]
pub struct RequestLabels<'a> {
    /// Route name, or "-" ([`no_route`]).
    pub route: &'a Arc<str>,
    /// Dialect the client spoke, or "-".
    pub front: &'static str,
    /// Dialect of the upstream, or "-".
    pub back: &'static str,
    /// Operation name, or "-".
    pub operation: &'static str,
    /// HTTP status answered to the client.
    pub status: u16,
    /// `Casegate-Error` code, or "-" on success.
    pub code: &'static str,
}

/// The `route` label of a request no route matched: "-".
pub fn no_route() -> &'static Arc<str> {
    static NO_ROUTE: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    NO_ROUTE.get_or_init(|| Arc::from("-"))
}

/// Which way file bytes went: label `direction` = "upload" or "download".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Upload,
    /// Upstream to client.
    Download,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

// The label sets are built for every request to look their series up: route names are
// shared (`Arc<str>`, a reference count to build) and every other label is static, so a
// lookup allocates nothing.
//
// A family's map hashes its keys with std's SipHash, which took each label's bytes (and a
// terminator per string) in its own call: about 400 instructions a lookup, five lookups an
// upload (bench/RESULTS.md, the fifteenth round). [`folded_hash!`] folds a label set's
// values with foldhash first, and SipHash sees one `u64`. The fold reads the same values
// `Eq` compares, so equal label sets still hash alike. The keys are casegate's own (route
// and dialect names, operations, statuses, codes), never a client's bytes, so a hash
// without a random seed is no flooding risk.
macro_rules! folded_hash {
    ($($ty:ident { $($field:ident),+ })+) => {$(
        impl std::hash::Hash for $ty {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                use std::hash::{BuildHasher, Hasher};
                let mut fold = foldhash::fast::FixedState::default().build_hasher();
                $( std::hash::Hash::hash(&self.$field, &mut fold); )+
                state.write_u64(fold.finish());
            }
        }
    )+};
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RequestKey {
    route: Arc<str>,
    front: &'static str,
    back: &'static str,
    operation: &'static str,
    status: u16,
    code: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RouteOperation {
    route: Arc<str>,
    operation: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RouteBack {
    route: Arc<str>,
    back: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RouteDirection {
    route: Arc<str>,
    direction: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: Arc<str>,
    code: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct ReloadResult {
    result: &'static str,
}

folded_hash! {
    RequestKey { route, front, back, operation, status, code }
    RouteOperation { route, operation }
    RouteBack { route, back }
    RouteDirection { route, direction }
    RouteOnly { route }
    RouteCode { route, code }
    ReloadResult { result }
}

type Histograms<K> = Family<K, Histogram, fn() -> Histogram>;

/// The series this thread recorded last, with the [`Metrics`] they belong to: a request
/// like the one before it (the same route, operation and status, the usual case under
/// load) is counted through these handles, which share the families' series, without
/// hashing its labels and looking them up under the families' locks (five look-ups an
/// upload, about 1 600 instructions). The families never drop a series, so a handle kept
/// here always counts into the one the registry shows.
#[derive(Default)]
struct Last {
    request: Option<(u64, RequestKey, (Counter, Histogram))>,
    upstream: Option<(u64, RouteBack, Histogram)>,
    file_bytes: Option<(u64, RouteDirection, Counter)>,
    in_flight: Option<(u64, RouteOnly, Gauge)>,
}

thread_local! {
    static LAST: std::cell::RefCell<Last> = std::cell::RefCell::new(Last::default());
}

/// Records (`record`) into the series `slot` of this thread's [`Last`] holds when they
/// are registry `id`'s for `key`; else into the ones `series` looks up in the families,
/// which the slot then keeps. When this thread's `Last` cannot be had (the thread is
/// ending, or recording re-entered itself), the look-up alone. `record` runs once; what
/// it returns is returned.
fn through_last<K: PartialEq + Clone, S, R>(
    slot: fn(&mut Last) -> &mut Option<(u64, K, S)>,
    id: u64,
    key: K,
    series: impl Fn(&K) -> S,
    record: impl Fn(&S) -> R,
) -> R {
    let kept = LAST.try_with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        let slot = slot(&mut last);
        Some(match slot {
            Some((i, k, s)) if *i == id && *k == key => record(s),
            _ => {
                let s = series(&key);
                let recorded = record(&s);
                *slot = Some((id, key.clone(), s));
                recorded
            }
        })
    });
    match kept.ok().flatten() {
        Some(recorded) => recorded,
        None => record(&series(&key)),
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// What the ledger says of itself at a scrape ([`Metrics::set_ledger_source`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerFigures {
    /// Store operations that failed (`casegate_ledger_errors_total`).
    pub errors: u64,
    /// Whether it takes uploads, as `/readyz` asks (`casegate_ledger_available`).
    pub available: bool,
    /// Confirmed files' rows waiting in memory to be written (`casegate_ledger_rows_waiting`).
    pub waiting: u64,
    /// Rows given up, each logged under `casegate::ledger::lost`
    /// (`casegate_ledger_rows_lost_total`).
    pub lost: u64,
}

type LedgerSource = Box<dyn Fn() -> LedgerFigures + Send + Sync>;

/// casegate's metrics: the families of SPEC 8 and their registry.
///
/// `Send + Sync`; share it in an `Arc`. Recording takes a read lock on the family and an
/// atomic add (the first sample of a new label set takes the write lock once).
pub struct Metrics {
    /// This instance among the process's (tests run several), for [`LAST`]; never reused.
    id: u64,
    registry: Registry,
    requests: Family<RequestKey, Counter>,
    request_duration: Histograms<RouteOperation>,
    upstream_duration: Histograms<RouteBack>,
    file_bytes: Family<RouteDirection, Counter>,
    in_flight: Family<RouteOnly, Gauge>,
    spooled: Family<RouteOnly, Counter>,
    upstream_errors: Family<RouteCode, Counter>,
    config_reloads: Family<ReloadResult, Counter>,
    ledger_source: Arc<RwLock<Option<LedgerSource>>>,
    /// The served certificate's `notAfter`, [`NO_CERT`] when casegate serves no TLS.
    tls_expiry: Arc<AtomicI64>,
    /// Set when the drain's limit cuts the connections still serving (see
    /// [`Metrics::drain_cutting`]).
    drain_cutting: std::sync::atomic::AtomicBool,
}

/// [`Metrics::tls_expiry`] without a certificate.
const NO_CERT: i64 = i64::MIN;

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Builds the registry with every family. The `casegate_config_reloads_total` series
    /// (`ok`, `error`), `casegate_ledger_errors_total` and `casegate_log_lines_lost_total`
    /// start at 0; the per-route families appear with their first sample.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<RequestKey, Counter>::default();
        let request_duration: Histograms<RouteOperation> =
            Family::new_with_constructor(duration_histogram);
        let upstream_duration: Histograms<RouteBack> =
            Family::new_with_constructor(duration_histogram);
        let file_bytes = Family::<RouteDirection, Counter>::default();
        let in_flight = Family::<RouteOnly, Gauge>::default();
        let spooled = Family::<RouteOnly, Counter>::default();
        let upstream_errors = Family::<RouteCode, Counter>::default();
        let config_reloads = Family::<ReloadResult, Counter>::default();
        let ledger_source: Arc<RwLock<Option<LedgerSource>>> = Arc::new(RwLock::new(None));

        // Counter names go in without `_total`: the encoder adds it.
        registry.register(
            "casegate_requests",
            "Requests answered, by route, front and back dialect, operation, status and Casegate-Error code",
            requests.clone(),
        );
        registry.register(
            "casegate_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, in seconds",
            request_duration.clone(),
        );
        registry.register(
            "casegate_upstream_duration_seconds",
            "Time of each upstream call, from sending it to the end of its answer, in seconds",
            upstream_duration.clone(),
        );
        registry.register(
            "casegate_file_bytes",
            "File bytes carried, by route and direction (upload: client to upstream; download: upstream to client)",
            file_bytes.clone(),
        );
        registry.register(
            "casegate_in_flight",
            "Requests being served now, by route",
            in_flight.clone(),
        );
        registry.register(
            "casegate_spooled",
            "Uploads spooled to disk before forwarding, by route",
            spooled.clone(),
        );
        registry.register(
            "casegate_upstream_errors",
            "Upstream calls that failed, by route and Casegate-Error code",
            upstream_errors.clone(),
        );
        registry.register(
            "casegate_config_reloads",
            "Configuration reloads, by result (ok: new routes in use; error: rejected, old routes kept)",
            config_reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = config_reloads.get_or_create(&ReloadResult { result });
        }
        registry.register_collector(Box::new(LedgerSeries(ledger_source.clone())));
        registry.register_collector(Box::new(LogLinesLost));
        let tls_expiry = Arc::new(AtomicI64::new(NO_CERT));
        registry.register_collector(Box::new(TlsExpiry(tls_expiry.clone())));
        registry.register_collector(Box::new(ProcessCollector {
            start_time_seconds: process_start_time(),
        }));

        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Arc::new(Metrics {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry,
            requests,
            request_duration,
            upstream_duration,
            file_bytes,
            in_flight,
            spooled,
            upstream_errors,
            config_reloads,
            ledger_source,
            tls_expiry,
            drain_cutting: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The drain's limit is reached: the connections still serving are about to be cut.
    pub fn start_drain_cut(&self) {
        self.drain_cutting
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the drain is cutting connections: a request dropped unanswered from then
    /// on was cut by casegate (counted 503), not by its client (499).
    pub fn drain_cutting(&self) -> bool {
        self.drain_cutting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one finished request (`casegate_requests_total` += 1) and observes its
    /// duration (`casegate_request_duration_seconds{route,operation}`).
    pub fn request(&self, l: &RequestLabels<'_>, duration: Duration) {
        let key = RequestKey {
            route: l.route.clone(),
            front: l.front,
            back: l.back,
            operation: l.operation,
            status: l.status,
            code: l.code,
        };
        let series = |key: &RequestKey| {
            let op = RouteOperation {
                route: key.route.clone(),
                operation: key.operation,
            };
            (
                self.requests.get_or_create(key).clone(),
                self.request_duration.get_or_create(&op).clone(),
            )
        };
        let record = |(count, duration_s): &(Counter, Histogram)| {
            count.inc();
            duration_s.observe(duration.as_secs_f64());
        };
        through_last(|last| &mut last.request, self.id, key, series, record);
    }

    /// Observes one upstream call's duration (`casegate_upstream_duration_seconds`).
    pub fn upstream_duration(&self, route: &Arc<str>, back: &'static str, duration: Duration) {
        let key = RouteBack {
            route: route.clone(),
            back,
        };
        through_last(
            |last| &mut last.upstream,
            self.id,
            key,
            |key| self.upstream_duration.get_or_create(key).clone(),
            |s| s.observe(duration.as_secs_f64()),
        );
    }

    /// Counts one failed upstream call (`casegate_upstream_errors_total{route,code}`).
    pub fn upstream_error(&self, route: &Arc<str>, code: &'static str) {
        self.upstream_errors
            .get_or_create(&RouteCode {
                route: route.clone(),
                code,
            })
            .inc();
    }

    /// Adds file bytes carried (`casegate_file_bytes_total{route,direction}`).
    pub fn file_bytes(&self, route: &Arc<str>, direction: Direction, bytes: u64) {
        let key = RouteDirection {
            route: route.clone(),
            direction: direction.label(),
        };
        through_last(
            |last| &mut last.file_bytes,
            self.id,
            key,
            |key| self.file_bytes.get_or_create(key).clone(),
            |count| {
                count.inc_by(bytes);
            },
        );
    }

    /// Raises `casegate_in_flight{route}` by one now; the returned guard lowers it again
    /// when dropped (so an early return or a panic cannot leak a count).
    pub fn in_flight(self: &Arc<Self>, route: &Arc<str>) -> InFlight {
        let key = RouteOnly {
            route: route.clone(),
        };
        // The handle raised is the guard's.
        let gauge = through_last(
            |last| &mut last.in_flight,
            self.id,
            key,
            |key| self.in_flight.get_or_create_owned(key),
            |gauge| {
                gauge.inc();
                gauge.clone()
            },
        );
        InFlight { gauge }
    }

    /// Counts one upload held back for its late fields, in memory or on disk
    /// (`casegate_spooled_total{route}`).
    pub fn spooled(&self, route: &Arc<str>) {
        self.spooled
            .get_or_create(&RouteOnly {
                route: route.clone(),
            })
            .inc();
    }

    /// Counts one configuration reload: `result="ok"` when `ok`, else `result="error"`.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ReloadResult { result })
            .inc();
    }

    /// Sets where the ledger's series come from: `f` is called on every scrape (the
    /// ledger keeps its own figures), so it must be cheap and must not block. Until it is
    /// set, `casegate_ledger_errors_total` reads 0 and the other ledger series are left
    /// out. A later call replaces the earlier source.
    pub fn set_ledger_source(&self, f: LedgerSource) {
        *self
            .ledger_source
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(f);
    }

    /// Sets `casegate_tls_cert_expiry_timestamp_seconds`: the `notAfter` of the certificate
    /// casegate serves (seconds since 1970), at start and at each reload; `None` leaves the
    /// series out.
    pub fn set_tls_cert_expiry(&self, not_after: Option<i64>) {
        self.tls_expiry.store(
            not_after.unwrap_or(NO_CERT),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The whole exposition in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]), the
    /// `process_*` families included. Reads a few small files under `/proc/self`, so it
    /// costs well under a millisecond; call it once per scrape.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "metrics encoding failed; the exposition is incomplete");
        }
        out
    }
}

/// One request counted in `casegate_in_flight{route}`; dropping it uncounts it.
#[derive(Debug)]
#[must_use = "the request stops being counted as in flight when this guard drops"]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The ledger's series, read from the ledger's own figures at scrape time:
/// `casegate_ledger_errors_total`, and with a source `casegate_ledger_available`,
/// `casegate_ledger_rows_waiting` and `casegate_ledger_rows_lost_total`.
struct LedgerSeries(Arc<RwLock<Option<LedgerSource>>>);

impl fmt::Debug for LedgerSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerSeries").finish_non_exhaustive()
    }
}

impl Collector for LedgerSeries {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let figures = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|f| f());
        counter(
            &mut encoder,
            "casegate_ledger_errors",
            "Ledger operations that failed.",
            figures.map_or(0, |f| f.errors),
        )?;
        let Some(figures) = figures else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "casegate_ledger_available",
            "1 while the ledger takes uploads (what /readyz asks of it), else 0.",
            i64::from(figures.available),
        )?;
        gauge(
            &mut encoder,
            "casegate_ledger_rows_waiting",
            "Rows of files the upstream confirmed, waiting in memory to be written to the ledger.",
            i64::try_from(figures.waiting).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut encoder,
            "casegate_ledger_rows_lost",
            "Rows given up (retry queue full or too old), each logged under casegate::ledger::lost to replay.",
            figures.lost,
        )
    }
}

/// `casegate_log_lines_lost_total`: log lines whose write the output refused (a full disk
/// under a redirected stderr), read from the log's own counter at scrape time.
#[derive(Debug)]
struct LogLinesLost;

impl Collector for LogLinesLost {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        counter(
            &mut encoder,
            "casegate_log_lines_lost",
            "Log lines lost: their write to stderr failed (a full disk, a closed pipe).",
            crate::logging::lines_lost(),
        )
    }
}

/// `casegate_tls_cert_expiry_timestamp_seconds`, when casegate serves TLS: an alert can
/// compare it with `time()`.
#[derive(Debug)]
struct TlsExpiry(Arc<AtomicI64>);

impl Collector for TlsExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let not_after = self.0.load(std::sync::atomic::Ordering::Relaxed);
        if not_after == NO_CERT {
            return Ok(());
        }
        gauge(
            &mut encoder,
            "casegate_tls_cert_expiry_timestamp_seconds",
            "When the TLS certificate casegate serves expires (its notAfter), in seconds since 1970.",
            not_after,
        )
    }
}

/// The standard `process_*` families, read from `/proc/self` on each scrape.
#[derive(Debug)]
struct ProcessCollector {
    /// Read once: it does not change.
    start_time_seconds: Option<f64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s));
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);

        if let Some(st) = &stat {
            counter(
                &mut encoder,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                st.cpu_ticks as f64 / USER_HZ,
            )?;
        }
        if let Some(v) = open_fds {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                v,
            )?;
        }
        if let Some(v) = limits.as_deref().and_then(parse_max_open_files) {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                v,
            )?;
        }
        if let Some(st) = &stat {
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                st.vsize_bytes,
            )?;
        }
        if let Some(v) = status.as_deref().and_then(|s| parse_status_kib(s, "VmRSS")) {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                v.saturating_mul(1024),
            )?;
        }
        if let Some(v) = self.start_time_seconds {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                v,
            )?;
        }
        Ok(())
    }
}

fn counter<N: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The fields of `/proc/self/stat` the collector uses.
#[derive(Debug, PartialEq)]
struct Stat {
    /// utime + stime, in `USER_HZ` ticks.
    cpu_ticks: u64,
    /// Start time, in `USER_HZ` ticks after boot.
    start_ticks: u64,
    /// Virtual memory size.
    vsize_bytes: u64,
}

/// Parses `/proc/[pid]/stat` (proc(5)). The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    // rest's first field is field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
    })
}

/// A `Key:   123 kB` line of `/proc/[pid]/status`, in KiB.
fn parse_status_kib(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = value.split_ascii_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(n)
    })
}

/// The soft limit of "Max open files" in `/proc/[pid]/limits`; `None` when unlimited.
fn parse_max_open_files(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
fn parse_btime(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The process's start time, seconds since the epoch: boot time plus field 22 of
/// `/proc/self/stat`.
fn process_start_time() -> Option<f64> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let btime = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(btime as f64 + stat.start_ticks as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Labels = BTreeMap<String, String>;

    /// One sample line of the exposition.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Labels,
        value: f64,
    }

    /// Parses the sample lines of a text-format exposition (comments skipped), undoing the
    /// label-value escapes `\\`, `\"` and `\n`. Panics on anything malformed.
    fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .unwrap_or_else(|| panic!("no value: {line}"));
            let name = line[..name_end].to_owned();
            let mut labels = Labels::new();
            let mut rest = &line[name_end..];
            if let Some(r) = rest.strip_prefix('{') {
                rest = r;
                loop {
                    if let Some(r) = rest.strip_prefix('}') {
                        rest = r;
                        break;
                    }
                    let eq = rest.find('=').expect("label =");
                    let key = rest[..eq].to_owned();
                    let mut chars = rest[eq + 1..].char_indices();
                    assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line}");
                    let mut value = String::new();
                    let end;
                    loop {
                        match chars.next().expect("unterminated label value") {
                            (_, '\\') => match chars.next().expect("escape").1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            (_, '\n') => panic!("raw newline in {line}"),
                            (i, '"') => {
                                end = i;
                                break;
                            }
                            (_, c) => value.push(c),
                        }
                    }
                    rest = &rest[eq + 1 + end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                    assert!(
                        labels.insert(key, value).is_none(),
                        "repeated label: {line}"
                    );
                }
            }
            let value = rest.strip_prefix(' ').expect("space before value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value {value:?}"));
            out.push(Sample {
                name,
                labels,
                value,
            });
        }
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `name{labels}` -> value, for the families whose names start with `prefix`.
    fn samples(text: &str, prefix: &str) -> BTreeMap<(String, Labels), f64> {
        let mut map = BTreeMap::new();
        for s in parse(text) {
            if s.name.starts_with(prefix) {
                let key = (s.name.clone(), s.labels.clone());
                assert!(map.insert(key, s.value).is_none(), "duplicate series {s:?}");
            }
        }
        map
    }

    /// `# TYPE` lines: family name -> type.
    fn types(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (n, t) = l.split_once(' ').expect("TYPE name type");
                (n.to_owned(), t.to_owned())
            })
            .collect()
    }

    /// The sample lines of a histogram series with these observations.
    fn expect_histogram(
        into: &mut BTreeMap<(String, Labels), f64>,
        name: &str,
        base: &[(&str, &str)],
        observations: &[f64],
    ) {
        let le = |b: String| {
            let mut l = labels(base);
            l.insert("le".into(), b);
            l
        };
        for bound in DURATION_BUCKETS {
            let n = observations.iter().filter(|&&o| o <= bound).count();
            into.insert((format!("{name}_bucket"), le(format!("{bound}"))), n as f64);
        }
        into.insert(
            (format!("{name}_bucket"), le("+Inf".into())),
            observations.len() as f64,
        );
        into.insert(
            (format!("{name}_sum"), labels(base)),
            observations.iter().sum(),
        );
        into.insert(
            (format!("{name}_count"), labels(base)),
            observations.len() as f64,
        );
    }

    #[test]
    fn render_has_exactly_the_recorded_samples() {
        let m = Metrics::new();
        let a: Arc<str> = Arc::from("a");
        let ok = RequestLabels {
            route: &a,
            front: "thalamus",
            back: "tines",
            operation: "upload",
            status: 201,
            code: "-",
        };
        m.request(&ok, Duration::from_millis(10));
        m.request(&ok, Duration::from_secs(2));
        m.request(
            &RequestLabels {
                status: 502,
                code: "upstream_unavailable",
                ..ok
            },
            Duration::from_millis(300),
        );
        m.request(
            &RequestLabels {
                route: no_route(),
                front: "-",
                back: "-",
                operation: "-",
                status: 404,
                code: "no_route",
            },
            Duration::from_micros(100),
        );
        m.upstream_duration(&a, "tines", Duration::from_millis(50));
        m.upstream_duration(&a, "tines", Duration::from_secs(90));
        m.upstream_error(&a, "upstream_unavailable");
        m.file_bytes(&a, Direction::Upload, 100);
        m.file_bytes(&a, Direction::Upload, 23);
        m.file_bytes(&a, Direction::Download, 7);
        m.spooled(&a);
        m.spooled(&a);
        m.config_reload(true);
        m.config_reload(false);
        m.config_reload(false);
        m.set_ledger_source(Box::new(|| LedgerFigures {
            errors: 3,
            available: true,
            waiting: 2,
            lost: 1,
        }));

        let text = m.render();
        let req = |status: &str, code: &str| {
            labels(&[
                ("route", "a"),
                ("front", "thalamus"),
                ("back", "tines"),
                ("operation", "upload"),
                ("status", status),
                ("code", code),
            ])
        };
        let mut want = BTreeMap::new();
        let mut put = |name: &str, l: Labels, v: f64| {
            want.insert((name.to_owned(), l), v);
        };
        put("casegate_requests_total", req("201", "-"), 2.0);
        put(
            "casegate_requests_total",
            req("502", "upstream_unavailable"),
            1.0,
        );
        put(
            "casegate_requests_total",
            labels(&[
                ("route", "-"),
                ("front", "-"),
                ("back", "-"),
                ("operation", "-"),
                ("status", "404"),
                ("code", "no_route"),
            ]),
            1.0,
        );
        put(
            "casegate_file_bytes_total",
            labels(&[("route", "a"), ("direction", "upload")]),
            123.0,
        );
        put(
            "casegate_file_bytes_total",
            labels(&[("route", "a"), ("direction", "download")]),
            7.0,
        );
        put("casegate_spooled_total", labels(&[("route", "a")]), 2.0);
        put(
            "casegate_upstream_errors_total",
            labels(&[("route", "a"), ("code", "upstream_unavailable")]),
            1.0,
        );
        put(
            "casegate_config_reloads_total",
            labels(&[("result", "ok")]),
            1.0,
        );
        put(
            "casegate_config_reloads_total",
            labels(&[("result", "error")]),
            2.0,
        );
        put("casegate_ledger_errors_total", Labels::new(), 3.0);
        put("casegate_ledger_available", Labels::new(), 1.0);
        put("casegate_ledger_rows_waiting", Labels::new(), 2.0);
        put("casegate_ledger_rows_lost_total", Labels::new(), 1.0);
        // The process's own log counter (another test's output may refuse writes while
        // this one runs): present, whatever its value.
        let lost = samples(&text, "casegate_log_lines_lost_total")
            .into_values()
            .next()
            .unwrap_or(-1.0);
        put("casegate_log_lines_lost_total", Labels::new(), lost);
        expect_histogram(
            &mut want,
            "casegate_request_duration_seconds",
            &[("route", "a"), ("operation", "upload")],
            &[0.01, 2.0, 0.3],
        );
        expect_histogram(
            &mut want,
            "casegate_request_duration_seconds",
            &[("route", "-"), ("operation", "-")],
            &[0.0001],
        );
        expect_histogram(
            &mut want,
            "casegate_upstream_duration_seconds",
            &[("route", "a"), ("back", "tines")],
            &[0.05, 90.0],
        );

        let got = samples(&text, "casegate_");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{text}"
        );
        for (k, v) in &want {
            assert!((got[k] - v).abs() < 1e-9, "{k:?}: got {}, want {v}", got[k]);
        }

        // The exact wire form of a few lines: label order as declared, counters' `_total`.
        for line in [
            "casegate_requests_total{route=\"a\",front=\"thalamus\",back=\"tines\",operation=\"upload\",status=\"201\",code=\"-\"} 2",
            "casegate_request_duration_seconds_bucket{route=\"a\",operation=\"upload\",le=\"0.01\"} 1",
            "casegate_request_duration_seconds_bucket{route=\"a\",operation=\"upload\",le=\"+Inf\"} 3",
            "casegate_request_duration_seconds_count{route=\"a\",operation=\"upload\"} 3",
            "casegate_upstream_duration_seconds_bucket{route=\"a\",back=\"tines\",le=\"60\"} 1",
            "casegate_ledger_errors_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }

        let t = types(&text);
        for (family, ty) in [
            ("casegate_requests_total", "counter"),
            ("casegate_request_duration_seconds", "histogram"),
            ("casegate_upstream_duration_seconds", "histogram"),
            ("casegate_file_bytes_total", "counter"),
            ("casegate_spooled_total", "counter"),
            ("casegate_upstream_errors_total", "counter"),
            ("casegate_ledger_errors_total", "counter"),
            ("casegate_ledger_available", "gauge"),
            ("casegate_ledger_rows_waiting", "gauge"),
            ("casegate_ledger_rows_lost_total", "counter"),
            ("casegate_log_lines_lost_total", "counter"),
            ("casegate_config_reloads_total", "counter"),
        ] {
            assert_eq!(t.get(family).map(String::as_str), Some(ty), "{family}");
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {family}"
            );
        }
    }

    #[test]
    fn each_registry_counts_its_own_requests_whatever_this_thread_recorded_before() {
        // Two registries on one thread, the same labels, alternating; then other labels
        // and back: each count lands in its own registry's series, none twice.
        let (m1, m2) = (Metrics::new(), Metrics::new());
        let a: Arc<str> = Arc::from("a");
        let ok = RequestLabels {
            route: &a,
            front: "caseiq",
            back: "caseiq",
            operation: "upload",
            status: 201,
            code: "-",
        };
        let bad = RequestLabels {
            status: 502,
            code: "upstream_unavailable",
            ..ok
        };
        for (m, l) in [
            (&m1, &ok),
            (&m1, &ok),
            (&m2, &ok),
            (&m1, &bad),
            (&m1, &ok),
            (&m2, &bad),
        ] {
            m.request(l, Duration::from_millis(5));
            m.upstream_duration(&a, "caseiq", Duration::from_millis(1));
        }
        m2.upstream_duration(&a, "tines", Duration::from_millis(1));
        let count = |m: &Metrics, status: &str| {
            let key = (
                "casegate_requests_total".to_owned(),
                labels(&[
                    ("back", "caseiq"),
                    (
                        "code",
                        if status == "201" {
                            "-"
                        } else {
                            "upstream_unavailable"
                        },
                    ),
                    ("front", "caseiq"),
                    ("operation", "upload"),
                    ("route", "a"),
                    ("status", status),
                ]),
            );
            samples(&m.render(), "casegate_requests_total")
                .get(&key)
                .copied()
        };
        let calls = |m: &Metrics, back: &str| {
            let key = (
                "casegate_upstream_duration_seconds_count".to_owned(),
                labels(&[("back", back), ("route", "a")]),
            );
            samples(&m.render(), "casegate_upstream_duration_seconds_count")
                .get(&key)
                .copied()
        };
        assert_eq!(
            (count(&m1, "201"), count(&m1, "502")),
            (Some(3.0), Some(1.0))
        );
        assert_eq!(
            (count(&m2, "201"), count(&m2, "502")),
            (Some(1.0), Some(1.0))
        );
        assert_eq!(
            (calls(&m1, "caseiq"), calls(&m2, "caseiq")),
            (Some(4.0), Some(2.0))
        );
        assert_eq!(
            (calls(&m1, "tines"), calls(&m2, "tines")),
            (None, Some(1.0))
        );
        let durations = samples(&m1.render(), "casegate_request_duration_seconds_count");
        assert_eq!(durations.values().sum::<f64>(), 4.0, "{durations:?}");
    }

    #[test]
    fn a_fresh_registry_has_reloads_and_ledger_errors_at_zero() {
        let text = Metrics::new().render();
        let got = samples(&text, "casegate_");
        let mut want = BTreeMap::new();
        for r in ["ok", "error"] {
            want.insert(
                (
                    "casegate_config_reloads_total".to_owned(),
                    labels(&[("result", r)]),
                ),
                0.0,
            );
        }
        want.insert(
            ("casegate_ledger_errors_total".to_owned(), Labels::new()),
            0.0,
        );
        // The process's own log counter: 0 unless a test's log output refused writes.
        let lost = ("casegate_log_lines_lost_total".to_owned(), Labels::new());
        want.insert(lost.clone(), got.get(&lost).copied().unwrap_or(-1.0));
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn the_ledger_source_is_read_at_each_scrape() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let m = Metrics::new();
        let errors = Arc::new(AtomicU64::new(0));
        let e = errors.clone();
        m.set_ledger_source(Box::new(move || {
            let n = e.load(Ordering::Relaxed);
            LedgerFigures {
                errors: n,
                available: n == 0,
                waiting: n * 2,
                lost: n * 3,
            }
        }));
        let read = |m: &Metrics| {
            let got = samples(&m.render(), "casegate_ledger_");
            [
                "casegate_ledger_errors_total",
                "casegate_ledger_available",
                "casegate_ledger_rows_waiting",
                "casegate_ledger_rows_lost_total",
            ]
            .map(|name| got[&(name.to_owned(), Labels::new())])
        };
        assert_eq!(read(&m), [0.0, 1.0, 0.0, 0.0]);
        errors.store(5, Ordering::Relaxed);
        assert_eq!(read(&m), [5.0, 0.0, 10.0, 15.0]);
    }

    #[test]
    fn the_certificates_expiry_is_a_series_only_while_there_is_one() {
        let m = Metrics::new();
        let name = "casegate_tls_cert_expiry_timestamp_seconds";
        let read = |m: &Metrics| {
            samples(&m.render(), name)
                .get(&(name.to_owned(), Labels::new()))
                .copied()
        };
        assert_eq!(read(&m), None, "{}", m.render());
        m.set_tls_cert_expiry(Some(1_936_742_400));
        assert_eq!(read(&m), Some(1_936_742_400.0));
        assert!(
            m.render()
                .contains(&format!("# TYPE {name} gauge\n{name} 1936742400\n")),
            "{}",
            m.render()
        );
        m.set_tls_cert_expiry(None);
        assert_eq!(read(&m), None);
    }

    #[test]
    fn in_flight_goes_up_and_back_down() {
        let m = Metrics::new();
        let value = |m: &Metrics, route: &str| {
            samples(&m.render(), "casegate_in_flight")
                .get(&("casegate_in_flight".to_owned(), labels(&[("route", route)])))
                .copied()
        };
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let g1 = m.in_flight(&a);
        let g2 = m.in_flight(&a);
        let g3 = m.in_flight(&b);
        assert_eq!(value(&m, "a"), Some(2.0));
        assert_eq!(value(&m, "b"), Some(1.0));
        assert_eq!(types(&m.render())["casegate_in_flight"], "gauge");
        drop(g1);
        assert_eq!(value(&m, "a"), Some(1.0));
        // Another instance on this thread counts into its own series, not the one this
        // thread kept for `m` (and `m` after it into `m`'s again).
        let other = Metrics::new();
        let g4 = other.in_flight(&a);
        let g5 = m.in_flight(&a);
        assert_eq!(value(&other, "a"), Some(1.0));
        assert_eq!(value(&m, "a"), Some(2.0));
        drop((g2, g3, g4, g5));
        assert_eq!(value(&m, "a"), Some(0.0));
        assert_eq!(value(&m, "b"), Some(0.0));
        assert_eq!(value(&other, "a"), Some(0.0));
    }

    /// A series is found by its labels' values, not by which `Arc` holds the route name
    /// (a reload builds new ones): the folded hash must agree with `Eq`.
    #[test]
    fn equal_labels_from_distinct_arcs_count_in_one_series() {
        let m = Metrics::new();
        let labels_of = |route: &'static str, status: u16, code: &'static str| {
            let route: Arc<str> = Arc::from(route);
            move |m: &Metrics| {
                m.request(
                    &RequestLabels {
                        route: &route,
                        front: "caseiq",
                        back: "tines",
                        operation: "upload",
                        status,
                        code,
                    },
                    Duration::from_millis(3),
                );
                m.file_bytes(&route, Direction::Upload, 10);
                m.upstream_error(&route, code);
            }
        };
        for _ in 0..3 {
            labels_of("r", 201, "-")(&m);
        }
        labels_of("r", 502, "upstream_error")(&m);
        labels_of("r2", 201, "-")(&m);
        let text = m.render();
        let requests = samples(&text, "casegate_requests_total");
        let key = |route: &str, status: &str, code: &str| {
            (
                "casegate_requests_total".to_owned(),
                labels(&[
                    ("back", "tines"),
                    ("code", code),
                    ("front", "caseiq"),
                    ("operation", "upload"),
                    ("route", route),
                    ("status", status),
                ]),
            )
        };
        let want: BTreeMap<_, _> = [
            (key("r", "201", "-"), 3.0),
            (key("r", "502", "upstream_error"), 1.0),
            (key("r2", "201", "-"), 1.0),
        ]
        .into_iter()
        .collect();
        assert_eq!(requests, want, "{text}");
        let bytes = samples(&text, "casegate_file_bytes_total");
        assert_eq!(bytes.len(), 2, "{text}");
        let upload = |route: &str| {
            bytes[&(
                "casegate_file_bytes_total".to_owned(),
                labels(&[("direction", "upload"), ("route", route)]),
            )]
        };
        assert_eq!((upload("r"), upload("r2")), (40.0, 10.0));
        assert_eq!(samples(&text, "casegate_upstream_errors_total").len(), 3);
        let count = samples(&text, "casegate_request_duration_seconds_count");
        assert_eq!(count.values().copied().sum::<f64>(), 5.0, "{text}");
        assert_eq!(count.len(), 2, "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let route: Arc<str> = Arc::from("we\"ird\\route\nname");
        m.spooled(&route);
        m.upstream_error(&Arc::from("plain"), "code \"x\"\\y");
        let text = m.render();
        assert!(
            text.lines()
                .any(|l| l == r#"casegate_spooled_total{route="we\"ird\\route\nname"} 1"#),
            "{text}"
        );
        let got = samples(&text, "casegate_");
        assert_eq!(
            got.get(&(
                "casegate_spooled_total".to_owned(),
                labels(&[("route", &*route)])
            )),
            Some(&1.0)
        );
        assert_eq!(
            got.get(&(
                "casegate_upstream_errors_total".to_owned(),
                labels(&[("route", "plain"), ("code", "code \"x\"\\y")])
            )),
            Some(&1.0)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_families_are_present_and_plausible() {
        let text = Metrics::new().render();
        let got = samples(&text, "process_");
        let get = |name: &str| {
            *got.get(&(name.to_owned(), Labels::new()))
                .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
        };
        let rss = get("process_resident_memory_bytes");
        let vsz = get("process_virtual_memory_bytes");
        assert!(rss > 0.0 && vsz >= rss, "rss {rss} vsz {vsz}");
        assert!(get("process_open_fds") > 0.0);
        assert!(get("process_max_fds") >= get("process_open_fds"));
        assert!(get("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let start = get("process_start_time_seconds");
        assert!(
            start > now - 86_400.0 * 365.0 && start <= now + 1.0,
            "start {start}, now {now}"
        );
        let t = types(&text);
        assert_eq!(t["process_cpu_seconds_total"], "counter");
        assert_eq!(t["process_resident_memory_bytes"], "gauge");
        assert_eq!(t["process_open_fds"], "gauge");
    }

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (a (b) c) S 1 2 3 0 -1 4194304 103 0 0 0 250 75 0 0 20 0 1 0 152501 3133440 389 18446744073709551615 0\n";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                cpu_ticks: 325,
                start_ticks: 152501,
                vsize_bytes: 3133440,
            })
        );
        assert_eq!(parse_stat("4242 (trunc) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);

        let status = "Name:\tcasegate\nVmPeak:\t  10 kB\nVmRSS:\t    5120 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(5120));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_status_kib(status, "Threads"), None);

        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63204                63204                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );

        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 0\nbtime 1796136588\nprocesses 9\n"),
            Some(1796136588)
        );
    }
}
