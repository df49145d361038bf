//! The `log` backend: stderr in the foreground (`-d`), syslog otherwise,
//! with each process's role as the message prefix (`vm/web1`).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

const SYSLOG_SOCKET: &str = "/dev/log";
// Facility daemon (3), shifted as RFC 3164 wants.
const FACILITY_DAEMON: u8 = 3 << 3;

enum Sink {
    Stderr,
    Syslog(Mutex<Option<UnixDatagram>>),
}

struct Logger {
    prefix: Mutex<String>,
    sink: Sink,
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

/// Installs the logger for this process. `verbose` counts `-v` flags:
/// info by default, debug with one, trace with two.
pub fn init(prefix: &str, foreground: bool, verbose: u8) {
    let sink = if foreground {
        Sink::Stderr
    } else {
        Sink::Syslog(Mutex::new(None))
    };
    let logger = LOGGER.get_or_init(|| Logger {
        prefix: Mutex::new(prefix.to_string()),
        sink,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(match verbose {
            0 => LevelFilter::Info,
            1 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        });
    }
}

/// Changes the prefix, e.g. once a vm process knows its VM's name.
pub fn set_prefix(prefix: &str) {
    if let Some(logger) = LOGGER.get()
        && let Ok(mut current) = logger.prefix.lock()
    {
        *current = prefix.to_string();
    }
}

fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = self.prefix.lock().map(|p| p.clone()).unwrap_or_default();
        match &self.sink {
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{prefix}: {}", record.args());
            }
            Sink::Syslog(socket) => {
                let line = format!(
                    "<{}>vmd[{}]: {prefix}: {}",
                    FACILITY_DAEMON | severity(record.level()),
                    std::process::id(),
                    record.args()
                );
                let Ok(mut socket) = socket.lock() else {
                    return;
                };
                if socket.is_none() {
                    *socket = UnixDatagram::unbound()
                        .and_then(|s| s.connect(SYSLOG_SOCKET).map(|()| s))
                        .ok();
                }
                if let Some(connected) = socket.as_ref()
                    && connected.send(line.as_bytes()).is_err()
                {
                    // The syslog daemon restarted: reconnect next time.
                    *socket = None;
                }
            }
        }
    }

    fn flush(&self) {}
}
