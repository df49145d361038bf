//! End-to-end tests with a real Linux guest: Debian's cloud kernel and the
//! test initramfs under vmd, driven by vmctl.
//!
//! They need KVM with hardware virtualization, which this project's
//! machines only have inside the nested environment, so they are ignored
//! by a plain `cargo test`; `make test` runs them there with
//! `--include-ignored` (tests/nested/run-e2e.sh).

use std::time::Duration;

use vmd_tests::{Daemon, LineReader, guest_fixture, unix_now};

/// Boot timeout: a guest boots in 10-30 s in the nested environment.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

// The fixture's fast, quiet command line plus the checks and the action.
fn cmdline(checks: &str, then: &str) -> String {
    let base = std::env::var("GUEST_CMDLINE")
        .unwrap_or_else(|_| "console=ttyS0 quiet panic=-1".to_string());
    format!("{base} vmdtest.checks={checks} vmdtest.then={then}")
}

fn start_with_console(
    daemon: &Daemon,
    name: &str,
    cpus: &str,
    cmdline: &str,
) -> (std::process::Child, LineReader) {
    let (kernel, initrd) = guest_fixture();
    let mut child = daemon.spawn_vmctl(&[
        "start",
        name,
        "-b",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "-m",
        "256M",
        "-p",
        cpus,
        "--cmdline",
        cmdline,
        "-c",
    ]);
    let reader = LineReader::new(child.stdout.take().unwrap());
    (child, reader)
}

fn value(line: &str) -> u64 {
    line.rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no number in {line:?}"))
}

#[test]
#[ignore = "needs KVM with hardware virtualization; make test runs it nested"]
fn guest_boots_with_two_cpus_rng_and_host_time_then_powers_off() {
    let daemon = Daemon::start();
    let (mut child, mut console) =
        start_with_console(&daemon, "linux", "2", &cmdline("cpus,rng,time", "poweroff"));
    console.expect_prefix("VMDTEST-BOOTED", BOOT_TIMEOUT);
    assert_eq!(
        console.expect_prefix("VMDTEST cpus", BOOT_TIMEOUT),
        "VMDTEST cpus 2"
    );
    assert_eq!(
        console.expect_prefix("VMDTEST rng-bytes", BOOT_TIMEOUT),
        "VMDTEST rng-bytes 64"
    );
    assert_eq!(
        console.expect_prefix("VMDTEST rng-current", BOOT_TIMEOUT),
        "VMDTEST rng-current virtio_rng.0"
    );
    let guest_time = value(&console.expect_prefix("VMDTEST time", BOOT_TIMEOUT));
    let host_time = unix_now();
    assert!(
        guest_time.abs_diff(host_time) <= 2,
        "guest clock {guest_time}, host clock {host_time}"
    );
    let rtc_time = value(&console.expect_prefix("VMDTEST rtc-time", BOOT_TIMEOUT));
    assert!(
        rtc_time.abs_diff(host_time) <= 2,
        "rtc {rtc_time}, host {host_time}"
    );
    console.expect_prefix("VMDTEST-END", BOOT_TIMEOUT);

    // The guest's poweroff ends the console session and stops the VM.
    console.rest(BOOT_TIMEOUT);
    assert!(child.wait().unwrap().success());
    let status = daemon.vmctl(&["status", "linux"]).stdout;
    let row: Vec<&str> = status.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        ["1", "-", "2", "256M", "-", "-", "root", "stopped", "linux"]
    );
}

#[test]
#[ignore = "needs KVM with hardware virtualization; make test runs it nested"]
fn guest_reboot_restarts_vm_and_forced_stop_ends_it() {
    let daemon = Daemon::start();
    let (mut child, mut console) =
        start_with_console(&daemon, "rebooter", "1", &cmdline("cpus", "reboot"));
    console.expect_prefix("VMDTEST-BOOTED", BOOT_TIMEOUT);
    assert_eq!(
        console.expect_prefix("VMDTEST cpus", BOOT_TIMEOUT),
        "VMDTEST cpus 1"
    );
    console.expect_prefix("VMDTEST-END", BOOT_TIMEOUT);
    // Same VM, same console, second boot.
    console.expect_prefix("VMDTEST-BOOTED", BOOT_TIMEOUT);
    let status = daemon.vmctl(&["status", "rebooter"]).stdout;
    assert!(status.contains(" running rebooter"), "{status}");

    let out = daemon.vmctl(&["stop", "-f", "rebooter"]);
    assert_eq!(
        out.stderr,
        "stopping vm rebooter: forced to terminate vm 1\n"
    );
    console.rest(BOOT_TIMEOUT);
    assert!(child.wait().unwrap().success());
    let status = daemon.vmctl(&["status", "rebooter"]).stdout;
    assert!(status.contains(" stopped rebooter"), "{status}");
}

#[test]
#[ignore = "needs KVM with hardware virtualization; make test runs it nested"]
fn vmctl_stop_shuts_guest_down_through_power_button() {
    let daemon = Daemon::start();
    let (mut child, mut console) =
        start_with_console(&daemon, "waiter", "1", &cmdline("cpus", "wait"));
    console.expect_prefix("VMDTEST-END", BOOT_TIMEOUT);

    let out = daemon.vmctl(&["stop", "-w", "waiter"]);
    assert_eq!(out.stderr, "stopping vm waiter: terminated vm 1\n");
    assert_eq!(out.code, 0);
    // The guest saw the button and powered off cleanly, not killed: the
    // kernel's last words are its power-down message.
    let rest = console.rest(BOOT_TIMEOUT);
    assert_eq!(
        rest.first().map(String::as_str),
        Some("VMDTEST-POWER-BUTTON"),
        "{rest:?}"
    );
    assert!(
        rest.last()
            .is_some_and(|line| line.ends_with("reboot: Power down")),
        "{rest:?}"
    );
    assert!(child.wait().unwrap().success());
    let status = daemon.vmctl(&["status", "waiter"]).stdout;
    assert!(status.contains(" stopped waiter"), "{status}");
}
