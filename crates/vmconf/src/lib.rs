//! vmconf: OpenBSD's vm.conf(5) language for vmd on Linux.
//!
//! [`load`] reads a configuration file and the files it includes, expands
//! macros, checks every value and returns a typed [`Config`] in which each
//! switch, VM, disk and interface carries the file and line it came from.
//! All errors are collected: a load either succeeds with warnings or fails
//! with every [`Diagnostic`], each printed as `FILE:LINE: message`.
//! [`check`] does the whole job of `vmd -n`. The crate reads only the
//! configuration, its includes and what validation needs: the realpath of
//! images, the user database and the online CPU count. It writes nothing.
//!
//! The grammar, the Linux extensions and the differences from OpenBSD are
//! described in `docs/vm.conf.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod diagnostic;
mod dump;
mod host;
mod lexer;
mod parser;
mod suggest;
mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{
    AllowInstance, BootDevice, Config, DEFAULT_CPUS, DEFAULT_LOCAL_PREFIX, DEFAULT_MEMORY_BYTES,
    DEFAULT_STAGGERED_DELAY_SECONDS, Disk, DiskFormat, Globals, Interface, Ipv4Prefix, Ipv6Prefix,
    Location, MAX_CPUS, MAX_DISKS, MAX_INTERFACES, MAX_MEMORY_BYTES, MAX_NAME_LEN,
    MIN_MEMORY_BYTES, MacAddress, Owner, Principal, Setting, StaggeredStart, Switch, Vm,
};
pub use diagnostic::{Diagnostic, Severity};

use host::HostFacts;
use parser::Parser;

/// The configuration file vmd reads without `-f`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vm.conf";

/// A configuration that loaded without errors.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Warnings to show the user: unused macros, rounded memory sizes,
    /// interfaces naming an undefined switch.
    pub warnings: Vec<Diagnostic>,
}

/// The output and exit status of `vmd -n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The text for stderr, each line ending in a newline.
    pub text: String,
    /// Whether the configuration is valid (exit status 0).
    pub ok: bool,
}

/// Loads a configuration.
///
/// `path` is the file given with `-f`, and `None` reads
/// [`DEFAULT_CONFIG_PATH`]. A missing default file gives an empty
/// configuration with a warning, as on OpenBSD. An explicit file that cannot
/// be read is an error. `defines` are `-D name=value` arguments; they take precedence over
/// definitions of the same macro in the files.
///
/// # Errors
///
/// Returns every diagnostic, warnings included, in the order found, when any
/// error occurred.
pub fn load(path: Option<&Path>, defines: &[String]) -> Result<Loaded, Vec<Diagnostic>> {
    let (path, explicit) = match path {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    match parser::read_config_file(&path) {
        Ok(contents) => load_bytes(&path, &contents, defines),
        Err(reason) if !explicit && !path.exists() => {
            let message = format!(
                "{}: {reason}: no switches or VMs are configured",
                path.display()
            );
            Ok(Loaded {
                config: Config::default(),
                warnings: vec![Diagnostic::warning(None, message)],
            })
        }
        Err(reason) => {
            let message = format!("failed to open {}: {reason}", path.display());
            Err(vec![Diagnostic::error(None, message)])
        }
    }
}

/// Loads a configuration from `contents`, named `path` in messages. Relative
/// `include` lines resolve against the directory of `path`.
///
/// # Errors
///
/// As [`load`].
pub fn load_bytes(
    path: &Path,
    contents: &[u8],
    defines: &[String],
) -> Result<Loaded, Vec<Diagnostic>> {
    load_with_host(path, contents, defines, HostFacts::probe())
}

fn load_with_host(
    path: &Path,
    contents: &[u8],
    defines: &[String],
    host: HostFacts,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut parser = Parser::new(host);
    for definition in defines {
        parser::define_from_command_line(&mut parser, definition);
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    parser.parse_contents(Arc::from(path), canonical, contents);
    parser.warn_about_undefined_switches();
    parser.warn_about_unused_macros();

    let failed = parser.error_count() > 0;
    let (config, diagnostics) = parser.finish();
    if failed {
        return Err(diagnostics);
    }
    Ok(Loaded {
        config,
        warnings: diagnostics,
    })
}

/// Does the whole job of `vmd -n [-v]`: loads the configuration and returns
/// the diagnostics, with `verbose` the normalized configuration, and
/// `configuration OK` when it is valid.
pub fn check(path: Option<&Path>, defines: &[String], verbose: bool) -> CheckReport {
    let mut text = String::new();
    match load(path, defines) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                text.push_str(&format!("{warning}\n"));
            }
            if verbose {
                text.push_str(&loaded.config.to_string());
            }
            text.push_str("configuration OK\n");
            CheckReport { text, ok: true }
        }
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                text.push_str(&format!("{diagnostic}\n"));
            }
            CheckReport { text, ok: false }
        }
    }
}

impl Parser {
    /// Warns about VM interfaces naming a switch that no switch block
    /// defines: vmd leaves them unattached, as OpenBSD does.
    fn warn_about_undefined_switches(&mut self) {
        let mut warnings = Vec::new();
        for vm in &self.config.vms {
            for interface in &vm.interfaces {
                let Some(switch) = &interface.switch else {
                    continue;
                };
                if self.config.switch(switch).is_some() {
                    continue;
                }
                let mut message = format!(
                    "vm \"{}\": switch \"{switch}\" is not defined, so the interface stays unattached",
                    vm.name
                );
                if let Some(best) = suggest::closest(
                    switch,
                    self.config
                        .switches
                        .iter()
                        .map(|switch| switch.name.as_str()),
                ) {
                    message.push_str(&format!(": did you mean \"{best}\"?"));
                }
                warnings.push((interface.location.clone(), message));
            }
        }
        for (location, message) in warnings {
            self.warning(location, message);
        }
    }

    fn warn_about_unused_macros(&mut self) {
        let unused: Vec<(Option<Location>, String)> = self
            .macros
            .entries()
            .iter()
            .filter(|entry| !entry.used)
            .map(|entry| {
                (
                    entry.location.clone(),
                    format!("macro '{}' not used", entry.name),
                )
            })
            .collect();
        for (location, message) in unused {
            match location {
                Some(location) => self.warning(location, message),
                None => self.global_warning(message),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, online_cpus: usize) -> Result<Loaded, Vec<Diagnostic>> {
        let host = HostFacts { online_cpus };
        load_with_host(Path::new("test.conf"), text.as_bytes(), &[], host)
    }

    fn messages(result: Result<Loaded, Vec<Diagnostic>>) -> Vec<String> {
        match result {
            Ok(loaded) => loaded.warnings.iter().map(ToString::to_string).collect(),
            Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn cpus_above_online_count_is_rejected() {
        let text = "vm \"a\" {\n\tcdrom \"/x.iso\"\n\tcpus 4\n}\n";
        assert_eq!(
            messages(load_text(text, 2)),
            vec!["test.conf:3: vm \"a\": cpus 4 is more than the 2 online CPUs of this host"]
        );
    }

    #[test]
    fn cpus_up_to_online_count_is_accepted() {
        let text = "vm \"a\" {\n\tcdrom \"/x.iso\"\n\tcpus 4\n}\n";
        let loaded = load_text(text, 4).unwrap();
        assert_eq!(loaded.config.vms[0].cpus, Some(4));
    }

    #[test]
    fn defaults_apply_without_options() {
        let loaded = load_text("vm \"a\" {\n\tcdrom \"/x.iso\"\n}\n", 1).unwrap();
        let vm = &loaded.config.vms[0];
        assert_eq!(vm.effective_memory_bytes(), 512 * 1024 * 1024);
        assert_eq!(vm.effective_cpus(), 1);
        assert_eq!(
            loaded.config.globals.effective_local_prefix(),
            DEFAULT_LOCAL_PREFIX
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let report = check(Some(Path::new("/nonexistent/vm.conf")), &[], false);
        assert_eq!(
            report,
            CheckReport {
                text: "failed to open /nonexistent/vm.conf: no such file or directory\n".to_owned(),
                ok: false,
            }
        );
    }

    #[test]
    fn include_depth_is_bounded() {
        let directory = std::env::temp_dir().join(format!("vmconf-depth-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        for level in 0..20 {
            let text = format!("include \"level{}.conf\"\n", level + 1);
            std::fs::write(directory.join(format!("level{level}.conf")), text).unwrap();
        }
        std::fs::write(directory.join("level20.conf"), "").unwrap();

        let errors = load(Some(&directory.join("level0.conf")), &[]).unwrap_err();
        std::fs::remove_dir_all(&directory).unwrap();
        assert_eq!(errors.len(), 1);
        let message = errors[0].to_string();
        assert!(message.contains(
            "level15.conf:1: failed to include file level16.conf: include depth exceeds 16"
        ));
    }

    #[test]
    fn macro_expansion_is_bounded() {
        // The value is a comment, so each expansion is read and dropped
        // without an error.
        let mut text = format!("big = \"#{}\"\n", "x".repeat(7999));
        for _ in 0..3000 {
            text.push_str("$big\n");
        }
        let messages = messages(load_text(&text, 1));
        let first_over_budget = 16 * 1024 * 1024 / 8000 + 2;
        assert_eq!(messages.len(), 3001 - first_over_budget + 1);
        assert_eq!(
            messages.first().map(String::as_str),
            Some(
                format!(
                    "test.conf:{first_over_budget}: macro 'big' not expanded: macro expansion exceeds 16777216 bytes"
                )
                .as_str()
            )
        );
    }

    #[test]
    fn command_line_define_without_equals_is_an_error() {
        let result = load_with_host(
            Path::new("t.conf"),
            b"",
            &["name".to_owned()],
            HostFacts { online_cpus: 1 },
        );
        assert_eq!(
            messages(result),
            vec!["-D name: missing '=': use -D name=value"]
        );
    }
}
