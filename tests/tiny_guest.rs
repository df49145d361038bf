//! Tiny guest programs on this machine's KVM: each checks one part of the
//! VM engine from inside the guest and reports on the console.

use vmd_tests::run_tiny;
use vmm::VmExit;

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
