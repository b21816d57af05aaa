//! Routes the `log` records of covey (and of iroh, quinn, …) to a logger the app implements.

use std::cell::Cell;
use std::sync::{Arc, Once, RwLock};

use crate::error::ListenerError;

/// Severity of a log record, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong but work goes on.
    Warn,
    /// Lifecycle: node opened, shut down, peers connected.
    Info,
    /// Detail useful when debugging.
    Debug,
    /// Everything.
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => Self::Error,
            LogLevel::Warn => Self::Warn,
            LogLevel::Info => Self::Info,
            LogLevel::Debug => Self::Debug,
            LogLevel::Trace => Self::Trace,
        }
    }
}

impl From<log::Level> for LogLevel {
    fn from(l: log::Level) -> Self {
        match l {
            log::Level::Error => Self::Error,
            log::Level::Warn => Self::Warn,
            log::Level::Info => Self::Info,
            log::Level::Debug => Self::Debug,
            log::Level::Trace => Self::Trace,
        }
    }
}

/// One log record. Covey never puts secrets in log messages.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// Where it comes from, a Rust module path such as `covey_core::node`.
    pub target: String,
    /// The message.
    pub message: String,
}

/// Receives log records; the app implements it (forwarding to os_log, Logcat, `logging`).
/// Calls come from any thread, often a background one, and must be quick. An exception it
/// raises is dropped.
#[uniffi::export(foreign)]
pub trait Logger: Send + Sync {
    /// Handles one record.
    fn log(&self, record: LogRecord) -> Result<(), ListenerError>;
}

/// The process-wide `log::Log` that forwards to the app's current [`Logger`].
struct Router {
    logger: RwLock<Option<Arc<dyn Logger>>>,
}

static ROUTER: Router = Router {
    logger: RwLock::new(None),
};
static INSTALL: Once = Once::new();

thread_local! {
    /// Set while this thread is inside the app's logger, so a record logged from there is
    /// dropped instead of recursing.
    static IN_LOGGER: Cell<bool> = const { Cell::new(false) };
}

impl log::Log for Router {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || IN_LOGGER.with(Cell::get) {
            return;
        }
        let logger = match self.logger.read() {
            Ok(guard) => guard.clone(),
            Err(_) => return,
        };
        let Some(logger) = logger else { return };
        IN_LOGGER.with(|c| c.set(true));
        // A failing app logger has nowhere to report to; its error is dropped.
        let _ = logger.log(LogRecord {
            level: record.level().into(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
        });
        IN_LOGGER.with(|c| c.set(false));
    }

    fn flush(&self) {}
}

/// Sends log records at `level` and more severe to `logger`. The first call installs Covey's
/// router as the process's `log` logger; later calls replace the app logger and the level.
/// If the host process already installed another `log` logger (a Rust app embedding covey),
/// that one keeps receiving the records and `logger` gets none.
#[uniffi::export]
pub fn set_logger(logger: Arc<dyn Logger>, level: LogLevel) {
    if let Ok(mut slot) = ROUTER.logger.write() {
        *slot = Some(logger);
    }
    INSTALL.call_once(|| {
        // Fails only if another logger owns the `log` facade; then that one keeps it.
        let _ = log::set_logger(&ROUTER);
    });
    log::set_max_level(level.into());
}
