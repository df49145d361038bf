//! The examples of OpenBSD's vm.conf(5), written out afresh with paths under
//! a temporary directory, must load to the meaning the manual gives them.

use std::fs;
use std::path::{Path, PathBuf};

use vmconf::{Config, MacAddress};

/// A directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("vmconf-{name}-{}", std::process::id()));
        fs::create_dir_all(&path).expect("temporary directory is writable");
        TempDir(fs::canonicalize(&path).expect("temporary directory exists"))
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir_all(path.parent().expect("file has a directory"))
            .expect("directory is writable");
        fs::write(&path, contents).expect("file is writable");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The manual's example file: a macro for the install sets, a VM booting
/// the install kernel with two disks and two switched interfaces, a VM with
/// 2G and a fixed MAC address, an instance of it, and the two switches.
const MANUAL_EXAMPLE: &str = r#"
# Macros
sets="$root/pub/OpenBSD/snapshots/amd64/"

#
# Virtual machines
#

vm "openbsd.vm" {
	boot $sets "bsd.rd"

	# First disk from 'vmctl create -s 4G "/var/vm/openbsd.img"'
	disk "$root/var/vm/openbsd.img"

	# Second disk from OpenBSD contains the install sets
	disk $sets "install.img"

	# Interface will show up as tap(4) on the host and as vio(4) in the VM
	interface { switch "uplink" }
	interface { switch "local" }
}

vm "vm2.example.com" {
	memory 2G
	disk "$root/var/vm/vm2-disk.img"
	interface {
		switch "uplink"
		lladdr 00:11:22:aa:bb:cc
		down
	}
	allow instance { disk, interface }
	owner ":daemon"
}

# Create a new VM as an instance from 'vm2.example.com'
vm "vm2.example.com" instance "vm3.example.com" {
	disk "$root/var/vm/vm3-disk.img"
}

#
# Switches
#

switch "uplink" {
	# This interface will default to bridge0
	interface bridge0
}

switch "local" {
	interface bridge1
	group "local"
	down
}
"#;

fn load_manual_example(root: &TempDir) -> Config {
    // The manual writes absolute paths; `$root` puts them under the
    // temporary directory, as a macro given with -D.
    let text = MANUAL_EXAMPLE.replace("$root", &root.0.display().to_string());
    let config_path = root.file("etc/vm.conf", text.as_bytes());
    match vmconf::load(Some(&config_path), &[]) {
        Ok(loaded) => {
            assert!(
                loaded.warnings.is_empty(),
                "warnings: {:?}",
                loaded.warnings
            );
            loaded.config
        }
        Err(errors) => panic!("the manual example does not load: {errors:?}"),
    }
}

fn make_images(root: &TempDir) {
    root.file("pub/OpenBSD/snapshots/amd64/bsd.rd", b"kernel");
    root.file("pub/OpenBSD/snapshots/amd64/install.img", b"sets");
    root.file("var/vm/openbsd.img", b"QFI\xfb\0\0\0\x03");
    root.file("var/vm/vm2-disk.img", b"raw");
    root.file("var/vm/vm3-disk.img", b"raw");
}

fn path_under(root: &TempDir, relative: &str) -> PathBuf {
    root.0.join(relative)
}

#[test]
fn install_vm_boot_and_disks() {
    let root = TempDir::new("manual-install");
    make_images(&root);
    let config = load_manual_example(&root);

    let vm = config.vm("openbsd.vm").expect("openbsd.vm is defined");
    assert_eq!(
        vm.boot,
        Some(path_under(&root, "pub/OpenBSD/snapshots/amd64/bsd.rd"))
    );
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.disks[0].path, path_under(&root, "var/vm/openbsd.img"));
    assert_eq!(vm.disks[0].format, None, "detected when the VM starts");
    assert_eq!(
        vm.disks[1].path,
        path_under(&root, "pub/OpenBSD/snapshots/amd64/install.img")
    );
    assert_eq!(vm.disks[1].format, None);
    assert_eq!(vm.effective_memory_bytes(), 512 * 1024 * 1024);
    assert!(vm.enabled);
}

#[test]
fn install_vm_has_one_interface_per_switch() {
    let root = TempDir::new("manual-interfaces");
    make_images(&root);
    let config = load_manual_example(&root);

    let vm = config.vm("openbsd.vm").expect("openbsd.vm is defined");
    let switches: Vec<Option<&str>> = vm.interfaces.iter().map(|i| i.switch.as_deref()).collect();
    assert_eq!(switches, vec![Some("uplink"), Some("local")]);
    assert!(vm.interfaces.iter().all(|interface| interface.up));
    assert!(vm.interfaces.iter().all(|interface| !interface.local));
    assert!(
        vm.interfaces
            .iter()
            .all(|interface| interface.lladdr.is_none())
    );
    assert_eq!(vm.effective_interface_count(), 2);
}

#[test]
fn second_vm_memory_and_interface() {
    let root = TempDir::new("manual-vm2");
    make_images(&root);
    let config = load_manual_example(&root);

    let vm = config
        .vm("vm2.example.com")
        .expect("vm2.example.com is defined");
    assert_eq!(vm.memory_bytes, Some(2 * 1024 * 1024 * 1024));
    assert_eq!(vm.boot, None, "without boot the VM starts the firmware");
    let interface = &vm.interfaces[0];
    assert_eq!(interface.switch.as_deref(), Some("uplink"));
    assert_eq!(
        interface.lladdr,
        Some(MacAddress([0x00, 0x11, 0x22, 0xaa, 0xbb, 0xcc]))
    );
    assert!(!interface.up);

    let allow = vm.allow_instance.as_ref().expect("allow instance is set");
    assert!(allow.disk);
    assert!(allow.interface);
    assert!(!allow.boot);
    assert!(!allow.memory);
    assert!(!allow.cdrom);
    assert!(!allow.instance);
    let owner = vm.owner.as_ref().expect("owner is set");
    assert_eq!(owner.uid(), 0, "\":group\" leaves the user at root");
    assert!(owner.gid().is_some());
}

#[test]
fn instance_names_its_parent_and_own_disk() {
    let root = TempDir::new("manual-instance");
    make_images(&root);
    let config = load_manual_example(&root);

    let vm = config
        .vm("vm3.example.com")
        .expect("the instance is defined");
    assert_eq!(vm.instance_of.as_deref(), Some("vm2.example.com"));
    assert_eq!(vm.disks.len(), 1);
    assert_eq!(vm.disks[0].path, path_under(&root, "var/vm/vm3-disk.img"));
    assert_eq!(vm.memory_bytes, None, "memory is inherited from the parent");
    assert!(
        vm.interfaces.is_empty(),
        "interfaces are inherited from the parent"
    );
}

#[test]
fn switches_name_their_bridges() {
    let root = TempDir::new("manual-switches");
    make_images(&root);
    let config = load_manual_example(&root);

    let names: Vec<&str> = config
        .switches
        .iter()
        .map(|switch| switch.name.as_str())
        .collect();
    assert_eq!(names, vec!["uplink", "local"]);
    let uplink = config.switch("uplink").expect("uplink is defined");
    assert_eq!(uplink.interface, "bridge0");
    assert!(uplink.up);
    assert!(uplink.enabled);
    assert_eq!(uplink.group, None);
    let local = config.switch("local").expect("local is defined");
    assert_eq!(local.interface, "bridge1");
    assert_eq!(local.group.as_deref(), Some("local"));
    assert!(!local.up);
}

#[test]
fn global_options_of_the_manual() {
    let root = TempDir::new("manual-globals");
    let path = root.file(
        "vm.conf",
        b"local prefix 10.20.0.0/16\nlocal inet6 prefix fd00:cafe::/64\n\
          socket owner :daemon\nstaggered start parallel 8 delay 5\n",
    );
    let config = vmconf::load(Some(&path), &[]).expect("globals load").config;
    let globals = &config.globals;

    let prefix = globals
        .local_prefix
        .as_ref()
        .expect("local prefix is set")
        .value;
    assert_eq!(prefix.address.to_string(), "10.20.0.0");
    assert_eq!(prefix.length, 16);
    let inet6 = globals
        .local_inet6
        .as_ref()
        .expect("local inet6 is set")
        .value
        .expect("with a prefix");
    assert_eq!(inet6.address.to_string(), "fd00:cafe::");
    assert_eq!(inet6.length, 64);
    let owner = &globals
        .socket_owner
        .as_ref()
        .expect("socket owner is set")
        .value;
    assert_eq!(owner.uid(), 0);
    let staggered = globals
        .staggered_start
        .as_ref()
        .expect("staggered start is set")
        .value;
    assert_eq!((staggered.parallel, staggered.delay_seconds), (8, 5));
    assert_eq!(
        globals.local_prefix.as_ref().map(|p| p.location.line),
        Some(1)
    );
    assert!(path_ends_with(
        &globals.local_prefix.as_ref().unwrap().location.file,
        "vm.conf"
    ));
}

fn path_ends_with(path: &Path, name: &str) -> bool {
    path.file_name().is_some_and(|file| file == name)
}
