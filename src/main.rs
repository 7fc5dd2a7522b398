//! The command line: parse arguments, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use casegate::config::{self, LogFormat};
use casegate::dialect::DialectId;
use casegate::emulator::{self, Fault};

#[derive(Parser)]
#[command(
    name = "casegate",
    version,
    about = "Translates case-file uploads between Thalamus v4, Tines v2, Case IQ and Kibana Cases"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a routes.toml (the default command).
    Serve {
        /// Path of routes.toml (default: $CASEGATE_CONFIG, else ./routes.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a routes.toml and print its route table.
    Check {
        /// Path of routes.toml (default: $CASEGATE_CONFIG, else ./routes.toml).
        config: Option<PathBuf>,
    },
    /// Print what the ledger of a routes.toml holds: front and back ids, cases, name,
    /// size, created.
    Ledger {
        /// Path of routes.toml (default: $CASEGATE_CONFIG, else ./routes.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only this route's files.
        #[arg(long)]
        route: Option<String>,
        /// A JSON array instead of a table (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Run a stand-alone emulator of one dialect's API, storing files in memory.
    Emulate {
        /// thalamus, tines, caseiq or kibana.
        dialect: String,
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// A credential to accept (repeatable); none: accept any request.
        #[arg(long = "token")]
        tokens: Vec<String>,
        /// Misbehave: status=N, delay=SECS, failed, reset-before-answer, reset-mid-body,
        /// headers-then-hang, html, html-error, truncated-json, empty-body, trickle,
        /// huge-body, comment-status=N, flaky=PERCENT.
        #[arg(long)]
        fault: Option<String>,
        /// Benchmark mode: drain uploads without parsing or storing and answer a canned
        /// success with a fixed file id; a download of that id streams as many bytes of a
        /// generated pattern as the last upload's file had (no Range).
        #[arg(long)]
        fast: bool,
        /// With --fast: a new file id in every upload answer (Thalamus, Tines, Case IQ), so
        /// that casegate's ledger records a row per upload; a download of any of them works.
        #[arg(long, requires = "fast")]
        unique_ids: bool,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Kibana: owner of the cases it creates.
        #[arg(long, default_value = "cases")]
        owner: String,
    },
}

/// `casegate ledger`: the rows of the configured ledger, as a table or JSON.
async fn show_ledger(cfg: &config::Config, route: Option<&str>, json: bool) -> Result<(), String> {
    if let Some(r) = route.filter(|r| !cfg.routes.iter().any(|x| x.name == *r)) {
        eprintln!(
            "note: no route named {r:?} in the configuration; showing what the ledger holds for it"
        );
    }
    if cfg.ledger == casegate::ledger::LedgerUrl::SqliteMemory {
        eprintln!("note: the ledger is in memory (sqlite::memory:), so it holds nothing outside a running casegate");
    }
    let ledger = casegate::ledger::Ledger::open(&cfg.ledger)
        .await
        .map_err(|e| format!("error: ledger {}: {e}", cfg.ledger.describe()))?;
    let rows = ledger
        .dump(route)
        .await
        .map_err(|e| format!("error: {e}"))?;
    if json {
        println!("{}", casegate::ledger::render_json(&rows));
    } else {
        print!("{}", casegate::ledger::render_table(&rows));
    }
    Ok(())
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("CASEGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("routes.toml"))
}

/// Logs to stderr: text lines (coloured on a terminal; otherwise written by casegate's
/// [`FastText`](casegate::logging::FastText), the same bytes), or one JSON object per line
/// (by [`FastJson`](casegate::logging::FastJson), the bytes of `tracing-subscriber`'s) with
/// the request (its `request_id`, method and path) on every line of a request, as its span
/// would show it: named from the request's context, or a real span where the log needs one
/// (colour, a filter naming spans). The access line is written directly (the same bytes)
/// when casegate's formatters are in use. Lines go through
/// casegate's [`LineSink`](casegate::logging::LineSink): a request appends its line to a
/// buffer and goes on, and a thread of its own writes what gathered in one `write` at
/// most every 2 ms (the access log is a line per request). It never drops a line (when
/// 4 MiB wait, logging waits); the returned guard writes what is held when it is
/// dropped, at exit.
fn init_logging(format: LogFormat) -> std::io::Result<casegate::logging::LineSinkGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASEGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = casegate::logging::LineSink::new(std::io::stderr(), "casegate-log")?;
    // A filter naming spans (`[request]=debug`, `casegate[request{path=...}]`) needs the
    // request's span to exist; otherwise casegate's formatters name the request from its
    // context, without one.
    let names_spans = filter.to_string().contains('[');
    match format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer.clone())
                .with_ansi(colour);
            // The coloured format is tracing-subscriber's own: it knows requests by their
            // spans only.
            casegate::logging::set_request_spans(colour || names_spans);
            if colour {
                builder.init();
            } else {
                // The same lines, written without the styling machinery colour needs, and
                // the access line without tracing's dispatch.
                casegate::logging::write_access_directly(
                    writer.clone(),
                    casegate::logging::LineFormat::Text,
                );
                builder
                    .fmt_fields(casegate::logging::FastFields)
                    .event_format(casegate::logging::FastText)
                    .init();
            }
        }
        LogFormat::Json => {
            // `json()` with the event flattened, the current span and no span list,
            // written by casegate's own formatter (the same bytes).
            casegate::logging::set_request_spans(names_spans);
            casegate::logging::write_access_directly(
                writer.clone(),
                casegate::logging::LineFormat::Json,
            );
            tracing_subscriber::fmt()
                .fmt_fields(casegate::logging::FastJsonFields)
                .event_format(casegate::logging::FastJson)
                .with_env_filter(filter)
                .with_writer(writer)
                .init();
        }
    }
    Ok(guard)
}

/// Small blocks from mimalloc, large ones from the system's malloc (see [`Split`]).
#[global_allocator]
static GLOBAL: Split = Split;

/// The size from which a block comes from the system's allocator instead of mimalloc.
const LARGE_BLOCK: usize = 32 * 1024;

/// casegate's allocator: blocks under [`LARGE_BLOCK`] (a request's header maps, strings,
/// futures, small bodies) come from mimalloc, about 10 % less CPU per small upload than
/// glibc's malloc; larger ones (read buffers and chunks of big files) from glibc's, which
/// hands the same hot block back chunk after chunk, where mimalloc cost 5-12 % more CPU per
/// 32 MiB upload (bench/RESULTS.md, "The sixth round"). A block's size at `dealloc` and
/// `realloc` is the one it was allocated with (`GlobalAlloc`'s contract), so each block
/// goes back to the allocator it came from; a `realloc` across the boundary moves it.
///
/// mimalloc is called as the system's allocator is (`std::alloc::System` on x86_64): a
/// block whose alignment is at most 16 bytes and at most its size by `mi_malloc`, whose
/// blocks are so aligned (16 bytes from 16 up, on 64-bit targets), the rest by the aligned
/// calls. The `mimalloc` crate's allocator always makes the aligned calls, and mimalloc 3
/// serves those from its own fast path only for blocks up to 1 KiB that happen to sit
/// aligned: a larger block whose size is not a power of two (a request's 1-5 KiB buffers)
/// was over-allocated and aligned by hand, about ten per small upload, each freed again
/// through the slower path such blocks take (bench/RESULTS.md, the eighteenth round).
struct Split;

/// The alignment every `mi_malloc` block of more than 8 bytes has (mimalloc's
/// `MI_MAX_ALIGN_SIZE`; its size classes past one word are whole multiples of it).
const MI_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` is aligned enough for `align`.
fn mi_plain(size: usize, align: usize) -> bool {
    align <= MI_ALIGN && align <= size
}

// SAFETY: every method forwards to an allocator chosen by the block's size alone, which is
// the same at allocation and release (GlobalAlloc's contract); a realloc that changes
// allocator allocates from the new one, copies the smaller of the two sizes and frees
// through the old one. Within mimalloc, `mi_malloc`, `mi_zalloc` and `mi_realloc` are
// used only where their blocks are aligned enough ([`mi_plain`]), and `mi_free` and
// `mi_realloc` take any mimalloc block, however it was allocated.
unsafe impl std::alloc::GlobalAlloc for Split {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() >= LARGE_BLOCK {
            std::alloc::System.alloc(layout)
        } else if mi_plain(layout.size(), layout.align()) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() >= LARGE_BLOCK {
            std::alloc::System.alloc_zeroed(layout)
        } else if mi_plain(layout.size(), layout.align()) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if layout.size() >= LARGE_BLOCK {
            std::alloc::System.dealloc(ptr, layout)
        } else {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        match (layout.size() >= LARGE_BLOCK, new_size >= LARGE_BLOCK) {
            (true, true) => std::alloc::System.realloc(ptr, layout, new_size),
            (false, false) if mi_plain(new_size, layout.align()) => {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            }
            (false, false) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
            _ => {
                let new_layout =
                    std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}

/// mimalloc 3's option numbers (`mi_option_e` in its `mimalloc.h`; the version is pinned
/// by Cargo.lock, and `allocator_options_are_mimalloc_3s` checks them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays with the process before mimalloc returns it.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Runs before anything allocates (an ELF constructor, ahead of Rust's `main`): memory
/// freed goes back to the system after a second, and arenas are committed as they are
/// used, not when reserved. The environment's `MIMALLOC_*` variables, read later, still
/// override both.
///
/// The purge delay was 10 ms while mimalloc served every block: a second (mimalloc 3's
/// default) doubled casegate's peak RSS under eight concurrent big uploads, whose chunks
/// it then held. With those chunks from glibc's malloc ([`Split`]), a second leaves the
/// memory benchmark's peaks where they were (12.2-19.3 MiB against 12.3-19.5), and 10 ms
/// returned the pages of a request's small blocks so soon that the next requests faulted
/// them back in: about 1 800 page faults a second under small uploads (0.2 per upload),
/// against about 130 with a second, and 4-9 % more CPU per small upload (bench/RESULTS.md,
/// the twenty-first round). 0, at once, costs a `madvise` so often that the CPU saved is
/// lost again.
extern "C" fn allocator_options() {
    // SAFETY: mi_option_set_default only stores a number in mimalloc's option table; it
    // is called once, on the one thread that exists before main.
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

/// ELF only: elsewhere mimalloc keeps its own defaults (and the `MIMALLOC_*` variables).
#[used]
#[cfg_attr(target_os = "linux", link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve { config: None });
    if let Command::Check { config } = command {
        let path = config_path(config);
        return match config::load(&path) {
            Ok(cfg) => {
                print!("{}", cfg.table());
                println!("{}: OK", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    // serve logs in the format its configuration names; everything else as text.
    let serve_config = match &command {
        Command::Serve { config } => {
            let path = config_path(config.clone());
            match config::load(&path) {
                Ok(cfg) => Some((path, cfg)),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let serving = serve_config.is_some();
    // Dropped at the end of main: what the log still holds is written then.
    let log_flush = match init_logging(
        serve_config
            .as_ref()
            .map_or(LogFormat::Text, |(_, c)| c.log_format),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot start the log's writer thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(casegate::workers::BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async move {
        match command {
            Command::Serve { .. } => match serve_config {
                Some((path, cfg)) => casegate::server::serve(&path, &cfg).await,
                None => Ok(()),
            },
            Command::Emulate {
                dialect,
                listen,
                tokens,
                fault,
                fast,
                unique_ids,
                tls_cert,
                tls_key,
                owner,
            } => {
                let d = DialectId::parse(&dialect)
                    .ok_or_else(|| format!("error: unknown dialect {dialect:?} (expected thalamus, tines, caseiq or kibana)"))?;
                let mut cfg = emulator::Config::new(d);
                cfg.tokens = tokens;
                cfg.fast = fast;
                cfg.fast_unique_ids = unique_ids;
                cfg.kibana_owner = owner;
                cfg.fault = fault
                    .map(|f| f.parse::<Fault>())
                    .transpose()
                    .map_err(|e| format!("error: --fault: {e}"))?;
                if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                    cfg.tls = Some(Arc::new(casegate::tls::server_config(&cert, &key)?));
                }
                emulator::run(cfg, listen).await.map_err(|e| format!("error: {e}"))
            }
            Command::Ledger {
                config,
                route,
                json,
            } => {
                let path = config_path(config);
                let cfg = config::load(&path).map_err(|e| e.to_string())?;
                show_ledger(&cfg, route.as_deref(), json).await
            }
            Command::Check { .. } => Ok(()),
        }
    });
    // The runtime's last lines logged, then written, before the last word below.
    drop(rt);
    let said = serving && say_last_word(&outcome);
    drop(log_flush);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !said {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `serve`'s last line, in its log's format (a pipeline reading JSON lines parses it like
/// the others): that casegate stopped, or why it could not start. False when the log's
/// filter would drop an error (the caller then prints it plainly).
fn say_last_word(outcome: &Result<(), String>) -> bool {
    match outcome {
        Ok(()) => {
            tracing::info!(target: "casegate::server", "casegate stopped");
            true
        }
        Err(e) if tracing::enabled!(target: "casegate::server", tracing::Level::ERROR) => {
            tracing::error!(target: "casegate::server", error = %e, "casegate could not start");
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block keeps its bytes when a realloc moves it across [`LARGE_BLOCK`], both ways,
    /// and the allocator it lands in takes it back (run under the test's own allocator,
    /// which is this one).
    #[test]
    fn blocks_cross_the_large_block_boundary_intact() {
        let mut v: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        v.reserve_exact(LARGE_BLOCK * 2);
        assert!(v.capacity() >= LARGE_BLOCK);
        v.extend((0..LARGE_BLOCK as u32 * 2).map(|i| (i % 241) as u8));
        v.truncate(700);
        v.shrink_to_fit();
        assert!(v.capacity() < LARGE_BLOCK);
        let expected: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(v, expected);
        let zeroed = vec![0u8; LARGE_BLOCK + 1];
        assert!(zeroed.iter().all(|b| *b == 0));
    }

    /// Every block is aligned as asked and keeps its bytes through reallocs, whichever of
    /// mimalloc's calls serves it: every size up to 2 KiB and a spread beyond, at every
    /// alignment from 1 to 4096, several blocks of each at once (the calls for a 16-byte
    /// alignment rest on mimalloc's size classes, which this checks for the mimalloc
    /// linked).
    #[test]
    fn every_block_is_aligned_as_asked_and_keeps_its_bytes() {
        use std::alloc::{GlobalAlloc, Layout};
        let sizes = (1..=2048).chain((2049..LARGE_BLOCK + 64).step_by(97));
        for size in sizes {
            for align in (0..=12).map(|b| 1usize << b) {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero sizes; each block is released with its own layout.
                unsafe {
                    let blocks: Vec<*mut u8> = (0..3)
                        .map(|k| {
                            let p = if k == 1 {
                                GLOBAL.alloc_zeroed(layout)
                            } else {
                                GLOBAL.alloc(layout)
                            };
                            assert!(!p.is_null());
                            assert_eq!(p as usize % align, 0, "{size} at {align}");
                            if k == 1 {
                                let zeroed = std::slice::from_raw_parts(p, size);
                                assert!(zeroed.iter().all(|b| *b == 0), "{size}");
                            }
                            std::ptr::write_bytes(p, (size % 251) as u8, size);
                            p
                        })
                        .collect();
                    for p in blocks {
                        let grown = size * 2 + 8;
                        let q = GLOBAL.realloc(p, layout, grown);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "{size} -> {grown} at {align}");
                        let kept = std::slice::from_raw_parts(q, size);
                        assert!(kept.iter().all(|b| *b == (size % 251) as u8), "{size}");
                        let grown_layout = Layout::from_size_align_unchecked(grown, align);
                        let shrunk = (size / 2).max(1);
                        let r = GLOBAL.realloc(q, grown_layout, shrunk);
                        assert!(!r.is_null());
                        assert_eq!(r as usize % align, 0, "{grown} -> {shrunk} at {align}");
                        let kept = std::slice::from_raw_parts(r, shrunk);
                        assert!(kept.iter().all(|b| *b == (size % 251) as u8), "{size}");
                        GLOBAL.dealloc(r, Layout::from_size_align_unchecked(shrunk, align));
                    }
                }
            }
        }
    }

    /// The option numbers above are mimalloc 3.3's; a different mimalloc (a `cargo update`)
    /// must have them checked again.
    #[test]
    fn allocator_options_are_mimalloc_3s() {
        // SAFETY: plain reads of mimalloc's version and option table.
        let (version, eager, purge) = unsafe {
            (
                libmimalloc_sys::mi_version(),
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!(
            version / 100,
            303,
            "mimalloc {version}: check the option numbers"
        );
        if !cfg!(target_os = "linux") {
            return;
        }
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(eager, 0);
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge, PURGE_DELAY_MS);
        }
    }
}
