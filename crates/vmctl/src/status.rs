//! `vmctl status` and `vmctl show`: the table OpenBSD's vmctl prints.

use std::path::Path;

use proto::units::fmt_scaled;
use proto::{VmState, VmStatus, VmTarget};

use crate::client::Client;

/// Arguments of `vmctl status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// List only running VMs.
    #[arg(short = 'r')]
    running_only: bool,
    /// Show only this VM (name or id).
    id: Option<String>,
}

/// Runs `vmctl status`.
pub fn run(socket: &Path, args: &StatusArgs) -> Result<(), String> {
    let target = args.id.as_deref().map(crate::parse_target).transpose()?;
    let list = Client::connect(socket)?.status()?;
    let (table, shown) = format_table(&list, target.as_ref(), args.running_only);
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(table.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("stdout: {}", proto::error_chain(&e)))?;
    }
    // As on OpenBSD: exit 1 (without a message) only when the list, after
    // -r, is empty, not when the id matches nothing.
    if shown == 0 {
        Err(String::new())
    } else {
        Ok(())
    }
}

fn state_text(state: VmState) -> &'static str {
    match state {
        VmState::Paused => "paused",
        VmState::Waiting => "waiting",
        VmState::Stopping => "stopping",
        VmState::Running => "running",
        VmState::Stopped | VmState::Disabled => "stopped",
    }
}

/// Formats the table; returns it and the number of VMs that passed the
/// `-r` filter.
pub fn format_table(
    list: &[VmStatus],
    target: Option<&VmTarget>,
    running_only: bool,
) -> (String, usize) {
    let mut table = format!(
        "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}\n",
        "ID", "PID", "VCPUS", "MAXMEM", "CURMEM", "TTY", "OWNER", "STATE", "NAME"
    );
    let mut counted = 0;
    for vm in list {
        let running = vm.pid.is_some();
        if running_only && !running {
            continue;
        }
        counted += 1;
        if !target.is_none_or(|target| target.matches(vm.id, &vm.name)) {
            continue;
        }
        let mut owner = vm.owner_user.clone();
        if let Some(group) = &vm.owner_group {
            owner.push(':');
            owner.push_str(group);
        }
        owner.truncate(15);
        let pid = vm.pid.map_or("-".to_string(), |pid| pid.to_string());
        // Nothing measured yet (a vm process still starting) shows as "-".
        let used = vm
            .used_bytes
            .filter(|&bytes| running && bytes > 0)
            .map_or("-".to_string(), fmt_scaled);
        // /dev/pts/3 is shown as pts/3: the bare number OpenBSD's basename
        // rule would print says little on Linux.
        let tty = vm
            .tty
            .as_deref()
            .filter(|_| running)
            .map_or("-".to_string(), |tty| {
                tty.trim_start_matches("/dev/").to_string()
            });
        table.push_str(&format!(
            "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}\n",
            vm.id,
            pid,
            vm.vcpus,
            fmt_scaled(vm.memory_bytes),
            used,
            tty,
            owner,
            state_text(vm.state),
            vm.name
        ));
    }
    (table, counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: u32, name: &str, running: bool) -> VmStatus {
        VmStatus {
            id,
            pid: running.then_some(72118),
            vcpus: 1,
            memory_bytes: 1 << 30,
            used_bytes: running.then_some(92_378_726),
            tty: running.then(|| "/dev/pts/8".to_string()),
            owner_user: "root".to_string(),
            owner_group: None,
            state: if running {
                VmState::Running
            } else {
                VmState::Stopped
            },
            name: name.to_string(),
        }
    }

    #[test]
    fn table_matches_openbsd_layout() {
        let mut stopped = vm(2, "vm2", false);
        stopped.memory_bytes = 512 << 20;
        stopped.owner_user = "joe".to_string();
        stopped.owner_group = Some("wheel".to_string());
        let (table, shown) = format_table(&[vm(1, "example", true), stopped], None, false);
        assert_eq!(
            table,
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
             \x20   1 72118     1    1.0G   88.1M   pts/8         root  running example\n\
             \x20   2     -     1    512M       -       -    joe:wheel  stopped vm2\n"
        );
        assert_eq!(shown, 2);
    }

    #[test]
    fn running_filter_counts_only_running() {
        let (table, shown) = format_table(&[vm(2, "vm2", false)], None, true);
        assert_eq!(
            table,
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n"
        );
        assert_eq!(shown, 0);
    }

    #[test]
    fn id_filter_keeps_exit_status_of_whole_list() {
        let list = [vm(1, "a", true), vm(2, "b", true)];
        let (table, shown) = format_table(&list, Some(&VmTarget::Name("zzz".into())), false);
        assert_eq!(table.lines().count(), 1);
        assert_eq!(shown, 2);
    }
}
