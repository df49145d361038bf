//! vmd: the virtual machine daemon. `main` parses the flags and runs the
//! role this process was started for; each role lives in its own module.

mod control;
mod event;
mod logger;
mod parent;
mod privsep;
mod socket;
mod vm;
mod vmm;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "vmd",
    about = "The virtual machine daemon",
    override_usage = "vmd [-dnv] [-D macro=value] [-f file] [-s socket]",
    disable_version_flag = true
)]
struct Flags {
    /// Stay in the foreground and log to stderr.
    #[arg(short = 'd')]
    debug: bool,
    /// Check the configuration file and exit.
    #[arg(short = 'n')]
    check_only: bool,
    /// Log more; repeat for more detail.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Define a macro, overriding its definition in the configuration.
    #[arg(short = 'D', value_name = "macro=value")]
    defines: Vec<String>,
    /// Configuration file (default /etc/vm.conf, which may be missing).
    #[arg(short = 'f', value_name = "file")]
    config: Option<PathBuf>,
    /// Control socket path (a Linux extension, to run several daemons).
    #[arg(short = 's', value_name = "socket", default_value = proto::DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// Internal: the process role, set when vmd starts its own children.
    #[arg(long, hide = true, value_enum)]
    role: Option<privsep::Role>,
}

impl Flags {
    /// Returns the -d and -v flags that vmd passes on to the processes it
    /// starts.
    fn logging_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.debug {
            args.push("-d".to_string());
        }
        args.extend((0..self.verbose).map(|_| "-v".to_string()));
        args
    }
}

fn main() {
    // Usage errors exit 1, as OpenBSD's usage() does; help exits 0.
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(error) => {
            let _ = error.print();
            std::process::exit(i32::from(error.use_stderr()));
        }
    };
    let code = match flags.role {
        None => parent::main(&flags),
        Some(role) => {
            privsep::set_process_name();
            logger::init(role.name(), flags.debug, flags.verbose);
            match role {
                privsep::Role::Control => control::main(),
                privsep::Role::Vmm => vmm::main(&flags),
                privsep::Role::Vm => vm::main(),
            }
        }
    };
    std::process::exit(code);
}
