//! Tiny guest programs on this machine's KVM: each checks one part of the
//! VM engine from inside the guest and reports on the console.

use vmd_tests::run_tiny;
use vmm::{ResetCause, VmExit};

#[test]
fn boot_state_matches_linux_64bit_entry() {
    let run = run_tiny("boot_state", "tiny boot_state", 1);
    assert_eq!(
        run.console,
        "ok cr0-pe-pg\nok cr4-pae\nok efer-lma\nok cs-boot-selector\nok ds-boot-selector\n\
         ok zero-page\nok hdrs-signature\nok boot-flag\nok loader-type\nok cmdline\n\
         ok e820-entries\nok e820-ram\nok e820-high-start\nok rsdp-address\nok rsdp-signature\n"
    );
    assert_eq!(run.exit, VmExit::PowerOff);
}

#[test]
fn unclaimed_addresses_read_all_ones() {
    let run = run_tiny("unclaimed", "", 1);
    assert_eq!(
        run.console,
        "ok port-read-32\nok port-read-8\nok port-after-write\nok mmio-window-hole\n\
         ok mmio-unmapped\nok mmio-after-write\nok post-port-read\n"
    );
    assert_eq!(run.exit, VmExit::PowerOff);
}

#[test]
fn uart_registers_answer_probe() {
    let run = run_tiny("uart", "", 1);
    assert_eq!(
        run.console,
        "ok lsr-idle\nok scratch\nok ier\nok iir-thr-empty\nok iir-cleared\nok divisor-low\nok lcr\n"
    );
    assert_eq!(run.exit, VmExit::PowerOff);
}

#[test]
fn i8042_reset_command_resets_vm() {
    let run = run_tiny("reset", "kbd", 1);
    assert_eq!(run.console, "resetting\n");
    assert_eq!(run.exit, VmExit::Reset(ResetCause::Keyboard));
}

#[test]
fn acpi_reset_register_resets_vm() {
    let run = run_tiny("reset", "acpi", 1);
    assert_eq!(run.console, "resetting\n");
    assert_eq!(run.exit, VmExit::Reset(ResetCause::AcpiResetRegister));
}

#[test]
fn triple_fault_resets_vm() {
    let run = run_tiny("reset", "triple", 1);
    assert_eq!(run.console, "resetting\n");
    assert_eq!(run.exit, VmExit::Reset(ResetCause::TripleFault));
}

#[test]
fn cmos_clock_shows_host_time() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let run = run_tiny("cmos", "", 1);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (checks, rtc_line) = run.console.split_once("rtc ").expect("an rtc line");
    assert_eq!(checks, "ok uip-clear\nok 24-hour-bcd\nok valid-ram\n");
    let rtc: u64 = rtc_line.trim().parse().expect("rtc seconds");
    assert!(
        (before..=after).contains(&rtc),
        "rtc {rtc} outside host time {before}..={after}"
    );
    assert_eq!(run.exit, VmExit::PowerOff);
}

#[test]
fn pci_configuration_space_lists_devices() {
    let run = run_tiny("pci", "", 1);
    assert_eq!(
        run.console,
        "ok bridge-id\nok bridge-class\nok rng-id\nok rng-revision\nok rng-subsystem\n\
         ok rng-capability-list\nok rng-bar0\nok rng-bar0-size\nok rng-bar0-restored\n\
         ok empty-slot\nok virtio-capabilities\nok msix-table-size\n"
    );
    assert_eq!(run.exit, VmExit::PowerOff);
}

#[test]
fn virtio_rng_serves_requests_and_survives_bad_ones() {
    let run = run_tiny("virtio_rng", "", 1);
    assert_eq!(
        run.console,
        "ok feature-version-1\nok features-ok\nok num-queues\nok queue-max-size\nok driver-ok\n\
         ok request-filled\nok random-bytes\nok bad-address-completes\n\
         ok looping-chain-completes\nok still-working\n"
    );
    assert_eq!(run.exit, VmExit::PowerOff);
}
