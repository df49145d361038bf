//! Errors and warnings found while loading a configuration, each printed as
//! `FILE:LINE: message`.

use std::fmt;

use crate::config::Location;

/// Whether a diagnostic fails the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The configuration is rejected.
    Error,
    /// Printed, but the configuration is still accepted.
    Warning,
}

/// One error or warning. Displays as `FILE:LINE: message`, or
/// `FILE:LINE: warning: message`; without a location (command-line
/// definitions, an unreadable top-level file) the `FILE:LINE: ` part is left
/// out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem was found.
    pub location: Option<Location>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn error(location: Option<Location>, message: String) -> Self {
        Diagnostic {
            location,
            severity: Severity::Error,
            message,
        }
    }

    pub(crate) fn warning(location: Option<Location>, message: String) -> Self {
        Diagnostic {
            location,
            severity: Severity::Warning,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}
