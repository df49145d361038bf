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

// Starts the guest fixture with 256M, `cpus` vCPUs, `cmdline` and `extra`
// vmctl arguments, and attaches to its console.
fn start_with_console(
    daemon: &Daemon,
    name: &str,
    cpus: &str,
    cmdline: &str,
    extra: &[&str],
) -> (std::process::Child, LineReader) {
    let (kernel, initrd) = guest_fixture();
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    let mut child = daemon.spawn_vmctl(&args);
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
    let (mut child, mut console) = start_with_console(
        &daemon,
        "linux",
        "2",
        &cmdline("cpus,rng,time", "poweroff"),
        &[],
    );
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
        start_with_console(&daemon, "rebooter", "1", &cmdline("cpus", "reboot"), &[]);
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
        start_with_console(&daemon, "waiter", "1", &cmdline("cpus", "wait"), &[]);
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

// Writes `text` at the start of sector `sector` of a disk.
fn write_sector(disk: &disk::Disk, sector: u64, text: &str) {
    let mut bytes = vec![0u8; 512];
    bytes[..text.len()].copy_from_slice(text.as_bytes());
    disk.write_at(&bytes, sector * 512).unwrap();
    disk.flush().unwrap();
}

fn read_sector_line(path: &std::path::Path, sector: u64) -> String {
    let disk = disk::Disk::open(path, None, disk::Access::ReadOnly).unwrap();
    let mut bytes = vec![0u8; 512];
    disk.read_at(&mut bytes, sector * 512).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let line = text.split('\n').next().unwrap();
    line.trim_end_matches('\0').to_string()
}

#[test]
#[ignore = "needs KVM with hardware virtualization; make test runs it nested"]
fn guest_reads_and_writes_raw_and_qcow2_chain_disks() {
    let dir = vmd_tests::TempDir::new("e2e-disks");
    let raw = dir.path().join("data.raw");
    let base = dir.path().join("base.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    disk::create_raw(&raw, 64 << 20).unwrap();
    disk::create_qcow2(&base, 32 << 20, None).unwrap();
    {
        let raw_disk = disk::Disk::open(&raw, None, disk::Access::ReadWrite).unwrap();
        write_sector(&raw_disk, 0, "hello from the host on raw");
        let base_disk = disk::Disk::open(&base, None, disk::Access::ReadWrite).unwrap();
        write_sector(&base_disk, 0, "hello from the qcow2 base");
    }
    disk::create_qcow2(
        &overlay,
        32 << 20,
        Some(disk::Backing {
            name: "base.qcow2",
            format: disk::Format::Qcow2,
        }),
    )
    .unwrap();

    let daemon = Daemon::start();
    let raw_arg = format!("raw:{}", raw.display());
    let (mut child, mut console) = start_with_console(
        &daemon,
        "disks",
        "1",
        &cmdline("disk", "poweroff"),
        &["-d", &raw_arg, "-d", overlay.to_str().unwrap()],
    );
    console.expect_prefix("VMDTEST-BOOTED", BOOT_TIMEOUT);
    assert_eq!(
        console.expect_prefix("VMDTEST vda-size", BOOT_TIMEOUT),
        "VMDTEST vda-size 131072"
    );
    assert_eq!(
        console.expect_prefix("VMDTEST vda-serial", BOOT_TIMEOUT),
        "VMDTEST vda-serial vmd-1-0"
    );
    assert_eq!(
        console.expect_prefix("VMDTEST vda-read", BOOT_TIMEOUT),
        "VMDTEST vda-read hello from the host on raw"
    );
    let vda_token = console.expect_prefix("VMDTEST vda-wrote", BOOT_TIMEOUT);
    assert_eq!(
        console.expect_prefix("VMDTEST vdb-size", BOOT_TIMEOUT),
        "VMDTEST vdb-size 65536"
    );
    assert_eq!(
        console.expect_prefix("VMDTEST vdb-read", BOOT_TIMEOUT),
        "VMDTEST vdb-read hello from the qcow2 base"
    );
    let vdb_token = console.expect_prefix("VMDTEST vdb-wrote", BOOT_TIMEOUT);
    console.expect_prefix("VMDTEST-END", BOOT_TIMEOUT);
    console.rest(BOOT_TIMEOUT);
    assert!(child.wait().unwrap().success());

    // What the guest wrote is in the images, and the base is untouched.
    let token = |line: &str| line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        read_sector_line(&raw, 1),
        format!("written by the guest {}", token(&vda_token))
    );
    assert_eq!(
        read_sector_line(&overlay, 1),
        format!("written by the guest {}", token(&vdb_token))
    );
    assert_eq!(read_sector_line(&overlay, 0), "hello from the qcow2 base");
    assert_eq!(read_sector_line(&base, 1), "");
    let check = std::process::Command::new(vmd_tests::bin("qemu-img"))
        .args(["check", overlay.to_str().unwrap()])
        .output()
        .expect("qemu-img runs");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.starts_with("No errors were found on the image.\n"),
        "{report}"
    );
    assert_eq!(check.status.code(), Some(0), "{report}");
}
