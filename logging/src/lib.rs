//! strata-logging: the log output of every Strata binary (`strata-master`,
//! `strata-agent`, `strata`, `strata-bench`, the examples): one `tracing` subscriber
//! writing to stderr, as text (ANSI colours only when stderr is a terminal, so a log
//! file holds no escape codes) or as JSON, one object per line. `RUST_LOG` overrides
//! the default filter.
//!
//! Only binaries call [`init_logging`]; libraries just emit `tracing` events. A crate of
//! its own because master and agent never depend on each other, and each binary needs
//! the same setup.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The shape of log lines on stderr (`--log-format`, env `STRATA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The global subscriber could not be installed (one already is).
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber")]
pub struct LoggingError(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

/// Installs the global subscriber: events at `default_filter` (e.g. `"info"`) and above
/// unless `RUST_LOG` says otherwise, written to stderr in `format`. Fails when a global
/// subscriber is already installed.
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), LoggingError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    }
    .map_err(LoggingError)
}
