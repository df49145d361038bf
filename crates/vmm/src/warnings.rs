//! A budget of warnings for what a guest does wrong, so that a guest that
//! repeats a mistake (or means harm) cannot flood the host's log.

/// Warnings one device logs about its guest before it goes quiet.
pub const GUEST_WARNINGS: u32 = 16;

/// How many guest-caused warnings a device may still log.
#[derive(Debug)]
pub struct WarningBudget {
    left: u32,
}

impl Default for WarningBudget {
    fn default() -> WarningBudget {
        WarningBudget {
            left: GUEST_WARNINGS,
        }
    }
}

impl WarningBudget {
    /// Logs a warning from `device` while the budget lasts; the last one
    /// says that further warnings are dropped.
    pub fn warn(&mut self, device: &str, message: std::fmt::Arguments<'_>) {
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        log::warn!("{device}: {message}");
        if self.left == 0 {
            log::warn!("{device}: further warnings about this guest are not logged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out() {
        let mut budget = WarningBudget::default();
        for _ in 0..GUEST_WARNINGS + 5 {
            budget.warn("dev", format_args!("bad"));
        }
        assert_eq!(budget.left, 0);
    }
}
