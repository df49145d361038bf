//! vmctl: the command-line client of vmd. This file contains the command
//! table, and each command family has its own module.

#![forbid(unsafe_code)]

mod client;
mod console;
mod create;
mod start;
mod status;
mod stop;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vmctl",
    about = "Control virtual machines run by vmd",
    override_usage = "vmctl [-v] command [arg ...]",
    infer_subcommands = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Cli {
    /// Print more about what happens.
    #[arg(short = 'v', action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// vmd's control socket (a Linux extension, to reach another daemon).
    /// Given before the command, because `create -s` is the image size.
    #[arg(short = 's', value_name = "socket", default_value = proto::DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to a VM's serial console (type ~. to leave).
    #[command(override_usage = "vmctl [-v] console id")]
    Console {
        /// VM name or id.
        id: String,
    },
    /// Create a disk image (runs without vmd).
    #[command(override_usage = "vmctl [-v] create [-b base | -i disk] [-s size] disk")]
    Create(create::CreateArgs),
    /// Start a VM.
    Start(start::StartArgs),
    /// List VMs.
    #[command(override_usage = "vmctl [-v] status [-r] [id]")]
    Status(status::StatusArgs),
    /// List VMs (same as status).
    #[command(override_usage = "vmctl [-v] show [id]")]
    Show(status::StatusArgs),
    /// Stop a VM, or all with -a.
    Stop(stop::StopArgs),
}

fn main() -> ExitCode {
    // Usage errors exit 1, as OpenBSD's usage() does; help exits 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match &cli.command {
        Command::Console { id } => console::run(&cli.socket, id),
        Command::Create(args) => create::run_command(args),
        Command::Start(args) => start::run(&cli.socket, args),
        Command::Status(args) | Command::Show(args) => status::run(&cli.socket, args),
        Command::Stop(args) => stop::run(&cli.socket, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if !message.is_empty() {
                proto::reportln!("vmctl: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Parses an `id` argument: all digits is a vmd id, anything else a name.
fn parse_target(text: &str) -> Result<proto::VmTarget, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(proto::VmTarget::Id)
            .map_err(|_| format!("invalid id: {text}"));
    }
    if text.len() > proto::VM_NAME_MAX {
        return Err("name too long".to_string());
    }
    Ok(proto::VmTarget::Name(text.to_string()))
}
