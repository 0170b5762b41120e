//! The `firescroll` node binary.

use firescroll::config::{Config, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod allocator;
mod open_files;

/// mimalloc instead of glibc's allocator: the applier allocates and frees small values, outcomes
/// and skiplist nodes per entry, and glibc spent a fifth of its CPU in `malloc`, `free` and
/// fastbin consolidation (server CPU per write 10-20 % lower; benches/README.md). Called through
/// [`allocator::Allocator`], which uses mimalloc's fast paths where they apply.
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the Rust bindings name no constant for
/// it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after 10 ms, not mimalloc 3's 1 s: flushed memtables (16 MiB
/// each) otherwise stayed resident for a second, and loading 1M records peaked ~80 MB higher than
/// with glibc. `MIMALLOC_PURGE_DELAY` still wins when set. (Built with `no_thp`: purged memory
/// touched again was faulted back as 2 MiB huge pages, each zeroed whole, ~8 % of an applier's
/// CPU under one-record HTTP puts.)
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists (the setter is not
        // thread-safe).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    // `firescroll copy ...`: the one subcommand (the node takes no positional arguments).
    if std::env::args_os().nth(1).is_some_and(|a| a == "copy") {
        return firescroll::copy::main(std::env::args_os().skip(1));
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("firescroll: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if config.print_only {
        println!(
            "{}",
            serde_json::to_string_pretty(&config.summary()).expect("JSON values serialize")
        );
        return std::process::ExitCode::SUCCESS;
    }
    init_logging(&config);
    // A Redis connection holds one descriptor, an HTTP one two (README, HTTP_MAX_CONNECTIONS).
    open_files::report(
        &open_files::raise(),
        (config.resp.max_clients + 2 * config.http.max_connections) as u64,
    );
    // Testing only: shifts this node's clock, so tests can show that replicas whose clocks
    // disagree still agree on every record (expiry included).
    if let Ok(offset) = std::env::var("FIRESCROLL_CLOCK_OFFSET_MS") {
        match offset.parse::<i64>() {
            Ok(offset) => {
                tracing::warn!(
                    offset_ms = offset,
                    "FIRESCROLL_CLOCK_OFFSET_MS shifts this node's clock (testing only)"
                );
                firescroll::model::set_clock_offset_ms(offset);
            }
            Err(_) => {
                eprintln!(
                    "firescroll: FIRESCROLL_CLOCK_OFFSET_MS={offset:?} is not a number of milliseconds"
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("firescroll: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(firescroll::node::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("firescroll: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    // Storage internals are chatty at info; keep them at warn unless debugging.
    let storage_level = if config.log_level >= tracing::Level::DEBUG {
        config.log_level
    } else {
        tracing::Level::WARN
    };
    let filter = Targets::new()
        .with_default(config.log_level)
        .with_target("fjall", storage_level)
        .with_target("lsm_tree", storage_level);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
