//! `vmctl stop`.

use std::path::Path;

use proto::{ControlRequest, ControlResponse, ErrorCode, StopRequest, VmState, VmTarget};

use crate::client::{Client, strerror};

/// Arguments of `vmctl stop`.
#[derive(clap::Args, Debug)]
#[command(override_usage = "vmctl [-v] stop [-fw] [id | -a]")]
pub struct StopArgs {
    /// Stop every running VM.
    #[arg(short = 'a', conflicts_with = "id")]
    all: bool,
    /// Kill the VM at once instead of asking the guest to shut down.
    #[arg(short = 'f')]
    force: bool,
    /// Wait until the VM has stopped.
    #[arg(short = 'w')]
    wait: bool,
    /// VM name or id.
    #[arg(required_unless_present = "all")]
    id: Option<String>,
}

/// Runs `vmctl stop`.
pub fn run(socket: &Path, args: &StopArgs) -> Result<(), String> {
    let targets = match &args.id {
        Some(id) => vec![crate::parse_target(id)?],
        None => Client::connect(socket)?
            .status()?
            .into_iter()
            .filter(|vm| vm.state != VmState::Stopped && vm.state != VmState::Disabled)
            .map(|vm| VmTarget::Name(vm.name))
            .collect(),
    };
    let mut failed = false;
    for target in targets {
        failed |= !stop_one(socket, target, args)?;
    }
    if failed { Err(String::new()) } else { Ok(()) }
}

// Prints OpenBSD's "stopping vm NAME: RESULT" line; returns false when
// vmd reported a failure.
fn stop_one(socket: &Path, target: VmTarget, args: &StopArgs) -> Result<bool, String> {
    let client = Client::connect(socket)?;
    match &target {
        VmTarget::Name(name) => proto::report!("stopping vm {name}: "),
        VmTarget::Id(_) => proto::report!("stopping vm: "),
    }
    let request = StopRequest {
        target,
        force: args.force,
        wait: args.wait,
    };
    client.send(&ControlRequest::Stop(request), &[])?;
    let (line, ok) = match client.receive()? {
        ControlResponse::StopRequested { id } => (format!("requested to shutdown vm {id}"), true),
        ControlResponse::Terminated { id } => (format!("terminated vm {id}"), true),
        ControlResponse::ForceTerminated { id } => (format!("forced to terminate vm {id}"), true),
        ControlResponse::Error(error) => (stop_error(error.code), false),
        _ => ("unexpected response received from vmd".to_string(), false),
    };
    proto::reportln!("{line}");
    Ok(ok)
}

fn stop_error(code: ErrorCode) -> String {
    match code {
        ErrorCode::VM_STOP_INVALID => "cannot stop vm that is not running".to_string(),
        ErrorCode::NOT_FOUND => "vm not found".to_string(),
        ErrorCode::INTERRUPTED => "interrupted call".to_string(),
        code => format!("failed: {}", strerror(code)),
    }
}
