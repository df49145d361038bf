//! vmd and vmctl end to end on this machine's KVM, with tiny guests: the
//! daemon's request handling, lifecycle rules and error messages.

use std::io::Read;
use std::time::{Duration, Instant};

use vmd_tests::{Daemon, TempDir, tiny_guest};

const HEADER: &str = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n";

fn tiny(name: &str) -> String {
    tiny_guest(name).display().to_string()
}

// Waits until `vmctl status NAME` shows `state`.
fn wait_for_state(daemon: &Daemon, name: &str, state: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = daemon.vmctl(&["status", name]).stdout;
        if status
            .lines()
            .nth(1)
            .is_some_and(|line| line.contains(state))
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {state}: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_without_vms_prints_header_and_fails() {
    let daemon = Daemon::start();
    let out = daemon.vmctl(&["status"]);
    assert_eq!(out.stdout, HEADER);
    out.assert_failed("");
}

#[test]
fn started_guest_console_shows_output_until_power_off() {
    let daemon = Daemon::start();
    let kernel = tiny("uart");
    let out = daemon.vmctl(&["start", "t1", "-b", &kernel, "-m", "32M", "-c"]);
    assert_eq!(
        out.stdout,
        "ok lsr-idle\nok scratch\nok ier\nok iir-thr-empty\nok iir-cleared\nok divisor-low\nok lcr\n"
    );
    assert_eq!(out.code, 0);
    let status = wait_for_state(&daemon, "t1", "stopped");
    assert_eq!(
        status,
        format!("{HEADER}    1     -     1   32.0M       -       -         root  stopped t1\n")
    );
}

#[test]
fn start_reports_id_and_tty() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "idle1", "-b", &kernel, "-m", "32M", "-p", "2"]);
    assert!(
        out.stderr
            .starts_with("vmctl: started vm 1 successfully, tty /dev/pts/"),
        "{out:?}"
    );
    assert_eq!(out.code, 0);
    let status = daemon.vmctl(&["status", "idle1"]).stdout;
    let row: Vec<&str> = status.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "1");
    assert_eq!(row[2], "2");
    assert_eq!(row[3], "32.0M");
    assert!(row[5].starts_with("pts/"), "{status}");
    assert_eq!(&row[6..], ["root", "running", "idle1"]);
    let out = daemon.vmctl(&["stop", "-f", "idle1"]);
    assert_eq!(out.stderr, "stopping vm idle1: forced to terminate vm 1\n");
}

#[test]
fn starting_running_vm_is_already_in_progress() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    assert_eq!(
        daemon
            .vmctl(&["start", "dup", "-b", &kernel, "-m", "32M"])
            .code,
        0
    );
    let out = daemon.vmctl(&["start", "dup", "-b", &kernel, "-m", "32M"]);
    out.assert_failed("vmctl: start vm command failed: Operation already in progress\n");
    daemon.vmctl(&["stop", "-f", "dup"]);
}

#[test]
fn stop_asks_guest_and_waits_for_power_off() {
    let daemon = Daemon::start();
    let kernel = tiny("power_button");
    assert_eq!(
        daemon
            .vmctl(&["start", "pb", "-b", &kernel, "-m", "32M"])
            .code,
        0
    );
    let mut console = daemon.spawn_vmctl(&["console", "pb"]);
    let mut seen = String::new();
    let mut stdout = console.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while !seen.contains("armed\n") {
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "console ended: {seen:?}"
        );
        seen.push(byte[0] as char);
    }
    let out = daemon.vmctl(&["stop", "-w", "pb"]);
    assert_eq!(out.stderr, "stopping vm pb: terminated vm 1\n");
    assert_eq!(out.code, 0);
    stdout.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "armed\nbutton\n");
    assert!(console.wait().unwrap().success());
}

#[test]
fn stop_of_guest_ignoring_power_button_stops_it() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    assert_eq!(
        daemon
            .vmctl(&["start", "deaf", "-b", &kernel, "-m", "32M"])
            .code,
        0
    );
    let out = daemon.vmctl(&["stop", "deaf"]);
    assert_eq!(out.stderr, "stopping vm deaf: requested to shutdown vm 1\n");
    wait_for_state(&daemon, "deaf", "stopped");
    let out = daemon.vmctl(&["stop", "deaf"]);
    out.assert_failed("stopping vm deaf: failed: Invalid argument\n");
}

#[test]
fn stop_of_unknown_vm_is_not_found() {
    let daemon = Daemon::start();
    let out = daemon.vmctl(&["stop", "nope"]);
    out.assert_failed("stopping vm nope: vm not found\n");
}

#[test]
fn guest_reboot_restarts_until_rate_limit() {
    let daemon = Daemon::start();
    let kernel = tiny("reset");
    let out = daemon.vmctl(&[
        "start",
        "loop",
        "-b",
        &kernel,
        "-m",
        "32M",
        "--cmdline",
        "kbd",
        "-c",
    ]);
    // The first start and three quick restarts; the fourth restart within
    // 6 s of the previous one is refused.
    assert_eq!(out.stdout, "resetting\n".repeat(4));
    assert_eq!(out.code, 0);
    wait_for_state(&daemon, "loop", "stopped");
}

#[test]
fn missing_kernel_is_reported_by_vmctl() {
    let daemon = Daemon::start();
    let out = daemon.vmctl(&["start", "k", "-b", "/nonexistent/kernel"]);
    out.assert_failed(
        "vmctl: cannot open kernel '/nonexistent/kernel': No such file or directory\n",
    );
}

#[test]
fn kernel_that_is_not_linux_is_rejected() {
    let daemon = Daemon::start();
    let dir = TempDir::new("not-a-kernel");
    let path = dir.path().join("kernel");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let out = daemon.vmctl(&["start", "bad", "-b", path.to_str().unwrap()]);
    out.assert_failed("vmctl: start bad: kernel is not a bzImage or ELF vmlinux\n");
    // A VM that never started is forgotten.
    assert_eq!(daemon.vmctl(&["status"]).stdout, HEADER);
}

#[test]
fn memory_too_small_for_kernel_is_rejected() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "small", "-b", &kernel, "-m", "8M"]);
    out.assert_failed("vmctl: start small: memory size 8M is too small for the kernel, which needs at least 17M\n");
}

#[test]
fn bad_memory_size_is_rejected_by_vmctl() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "m", "-b", &kernel, "-m", "512K"]);
    out.assert_failed("vmctl: memory size must be at least 1MB\n");
}

#[test]
fn invalid_vm_name_is_rejected() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "-b", &kernel, "--", "-bad"]);
    out.assert_failed("vmctl: invalid VM name\n");
}

#[test]
fn missing_dev_kvm_is_reported() {
    // vmd runs in a mount namespace whose /dev has ptys but no kvm node.
    let daemon = Daemon::start_with(|vmd| {
        let mut wrapper = std::process::Command::new("unshare");
        wrapper.args([
            "-m",
            "sh",
            "-c",
            "mount --make-rprivate / && mount -t tmpfs tmpfs /dev && mkdir /dev/pts && \
             mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts && \
             ln -s pts/ptmx /dev/ptmx && exec \"$@\"",
            "sh",
        ]);
        wrapper.arg(vmd.get_program()).args(vmd.get_args());
        wrapper
    });
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "nokvm", "-b", &kernel, "-m", "32M"]);
    out.assert_failed("vmctl: start nokvm: /dev/kvm: No such file or directory\n");
}

fn write_config(dir: &TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("vm.conf");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn staggered_start_keeps_later_vms_waiting() {
    let dir = TempDir::new("staggered");
    let config = write_config(
        &dir,
        &format!(
            "staggered start parallel 1 delay 600\n\
             vm \"first\" {{\n  boot \"{kernel}\"\n  memory 32M\n}}\n\
             vm \"second\" {{\n  boot \"{kernel}\"\n  memory 32M\n}}\n",
            kernel = tiny("idle")
        ),
    );
    let daemon = Daemon::start_with_config(&config);
    wait_for_state(&daemon, "first", "running");
    let status = daemon.vmctl(&["status", "second"]).stdout;
    assert_eq!(
        status,
        format!("{HEADER}    2     -     1   32.0M       -       -         root  waiting second\n")
    );
    // Stopping a waiting VM takes it out of the queue.
    let out = daemon.vmctl(&["stop", "second"]);
    assert_eq!(
        out.stderr,
        "stopping vm second: requested to shutdown vm 2\n"
    );
    let status = daemon.vmctl(&["status", "second"]).stdout;
    assert!(status.ends_with(" stopped second\n"), "{status}");
}

#[test]
fn configured_vms_start_when_enabled() {
    let dir = TempDir::new("vmconf");
    let config = write_config(
        &dir,
        &format!(
            "kernels = \"{}\"\n\
             vm \"auto\" {{\n  boot \"{}\"\n  memory 32M\n  cpus 2\n}}\n\
             vm \"manual\" {{\n  disable\n  boot $kernels\n  memory 32M\n}}\n",
            tiny("idle"),
            tiny("uart")
        ),
    );
    let daemon = Daemon::start_with_config(&config);
    wait_for_state(&daemon, "auto", "stopped");
    let status = daemon.vmctl(&["status"]).stdout;
    assert_eq!(
        status,
        format!(
            "{HEADER}    1     -     2   32.0M       -       -         root  stopped auto\n\
             \x20   2     -     1   32.0M       -       -         root  stopped manual\n"
        )
    );
    // Options other than a kernel conflict with the configuration.
    let kernel = tiny("uart");
    let out = daemon.vmctl(&["start", "manual", "-b", &kernel, "-m", "64M"]);
    assert_eq!(
        out.stderr,
        "vmctl: start vm command failed: Operation already in progress\n"
    );
    // As in OpenBSD's vmctl, options without something to boot are
    // rejected before vmd is asked.
    let out = daemon.vmctl(&["start", "manual", "-m", "64M"]);
    assert_eq!(out.stderr, "vmctl: no kernel or disk/cdrom specified\n");
    // An unknown name has nothing to boot; an unknown id names no VM.
    let out = daemon.vmctl(&["start", "nosuch"]);
    assert_eq!(out.stderr, "vmctl: could not open disk image(s)\n");
    let out = daemon.vmctl(&["start", "99"]);
    assert_eq!(
        out.stderr,
        "vmctl: start vm command failed: No such file or directory\n"
    );
    // A configured VM starts by its id too.
    let out = daemon.vmctl(&["start", "2"]);
    assert!(
        out.stderr.starts_with("vmctl: started vm 2 successfully"),
        "{out:?}"
    );
    daemon.vmctl(&["stop", "-f", "manual"]);
}

#[test]
fn vmd_n_checks_configuration() {
    let dir = TempDir::new("vmconf-check");
    let good = write_config(
        &dir,
        &format!("vm \"a\" {{\n  boot \"{}\"\n}}\n", tiny("idle")),
    );
    let output = std::process::Command::new(vmd_tests::bin("vmd"))
        .arg("-n")
        .arg("-f")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "configuration OK\n"
    );
    assert_eq!(output.status.code(), Some(0));

    let output = std::process::Command::new(vmd_tests::bin("vmd"))
        .arg("-nv")
        .arg("-f")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "vm \"a\" {{\n\tboot \"{}\"\n}}\nconfiguration OK\n",
            tiny("idle")
        )
    );
    assert_eq!(output.status.code(), Some(0));

    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "vm \"a\" {\n  memroy 1G\n}\n").unwrap();
    let output = std::process::Command::new(vmd_tests::bin("vmd"))
        .arg("-n")
        .arg("-f")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("{}:2: ", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains("memroy"), "{stderr}");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn disk_in_use_by_another_vm_is_rejected() {
    let daemon = Daemon::start();
    let dir = TempDir::new("disk-lock");
    let image = dir.path().join("shared.raw");
    disk::create_raw(&image, 1 << 20).unwrap();
    let kernel = tiny("idle");
    let disk_arg = image.to_str().unwrap();
    let out = daemon.vmctl(&["start", "first", "-b", &kernel, "-m", "32M", "-d", disk_arg]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon.vmctl(&[
        "start", "second", "-b", &kernel, "-m", "32M", "-d", disk_arg,
    ]);
    out.assert_failed(&format!(
        "vmctl: start second: disk {disk_arg}: image is in use by another process (locked)\n"
    ));
    daemon.vmctl(&["stop", "-f", "first"]);
}

#[test]
fn same_disk_twice_in_one_vm_is_rejected() {
    let daemon = Daemon::start();
    let dir = TempDir::new("disk-twice");
    let image = dir.path().join("twice.raw");
    disk::create_raw(&image, 1 << 20).unwrap();
    let kernel = tiny("idle");
    let disk_arg = image.to_str().unwrap();
    let out = daemon.vmctl(&[
        "start", "twice", "-b", &kernel, "-m", "32M", "-d", disk_arg, "-d", disk_arg,
    ]);
    out.assert_failed(&format!(
        "vmctl: start twice: disk {disk_arg}: attached twice\n"
    ));
    assert_eq!(daemon.vmctl(&["status"]).stdout, HEADER);
}

// Makes a FIFO, which nobody writes: opening it to read would block.
fn fifo(dir: &TempDir, name: &str) -> String {
    let path = dir.path().join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path.display().to_string()
}

#[test]
fn fifo_kernel_and_disk_are_refused_without_hanging() {
    let daemon = Daemon::start();
    let dir = TempDir::new("fifo");
    let kernel_fifo = fifo(&dir, "kernel");
    let disk_fifo = fifo(&dir, "disk");
    let out = daemon.vmctl(&["start", "f", "-b", &kernel_fifo]);
    out.assert_failed("vmctl: kernel must be a regular file\n");

    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "f", "-b", &kernel, "-m", "32M", "-d", &disk_fifo]);
    out.assert_failed(&format!(
        "vmctl: start f: disk {disk_fifo}: cannot open image: not a regular file or block device\n"
    ));
    assert_eq!(daemon.vmctl(&["status"]).stdout, HEADER);
}

#[test]
fn failed_start_keeps_an_existing_vm() {
    let daemon = Daemon::start();
    let dir = TempDir::new("keep");
    let image = dir.path().join("a.raw");
    disk::create_raw(&image, 1 << 20).unwrap();
    let kernel = tiny("idle");
    let disk_arg = image.to_str().unwrap();
    let start = ["-b", &kernel, "-m", "32M", "-d", disk_arg];
    let out = daemon.vmctl(&[&["start", "keep"][..], &start[..]].concat());
    assert_eq!(out.code, 0, "{out:?}");
    daemon.vmctl(&["stop", "-f", "-w", "keep"]);
    let out = daemon.vmctl(&[&["start", "holder"][..], &start[..]].concat());
    assert_eq!(out.code, 0, "{out:?}");
    // The image is locked now, so this start fails in vmd.
    let out = daemon.vmctl(&[&["start", "keep"][..], &start[..]].concat());
    assert_eq!(out.code, 1, "{out:?}");
    let status = daemon.vmctl(&["status", "keep"]).stdout;
    assert!(status.ends_with(" stopped keep\n"), "{status}");
    assert!(status.contains("\n    1 "), "{status}");
    daemon.vmctl(&["stop", "-f", "holder"]);
}

#[test]
fn missing_disk_is_reported_by_vmctl() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "d", "-b", &kernel, "-d", "/nonexistent/disk.img"]);
    out.assert_failed(
        "vmctl: invalid disk path: /nonexistent/disk.img: No such file or directory\n",
    );
}

#[test]
fn malformed_qcow2_is_rejected_with_its_problem() {
    let daemon = Daemon::start();
    let dir = TempDir::new("bad-qcow2");
    let image = dir.path().join("bad.qcow2");
    // The qcow2 magic and version 3, then nothing: the header is cut short.
    std::fs::write(&image, b"QFI\xfb\x00\x00\x00\x03").unwrap();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "bad", "-b", &kernel, "-d", image.to_str().unwrap()]);
    assert!(
        out.stderr
            .starts_with(&format!("vmctl: start bad: disk {}: ", image.display())),
        "{out:?}"
    );
    assert_eq!(out.code, 1);
    assert_eq!(daemon.vmctl(&["status"]).stdout, HEADER);
}

#[test]
fn too_many_disks_are_rejected() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let mut args = vec!["start", "many", "-b", &kernel];
    for _ in 0..5 {
        args.extend(["-d", "/dev/null"]);
    }
    let out = daemon.vmctl(&args);
    out.assert_failed("vmctl: too many disks\n");
}

// Runs `vmctl console NAME` on a new pty, as a user at a terminal would;
// returns the child and the master side to type on and read from.
fn console_on_pty(daemon_socket_args: &[&str], name: &str) -> (std::process::Child, std::fs::File) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let child = std::process::Command::new(vmd_tests::bin("vmctl"))
        .args(daemon_socket_args)
        .args(["console", name])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    (child, std::fs::File::from(pty.master))
}

// Reads from `master` until `expected` has appeared; returns what was read.
fn read_until(master: &mut std::fs::File, expected: &str) -> String {
    let mut seen = String::new();
    let mut buffer = [0u8; 256];
    while !seen.contains(expected) {
        let count = master.read(&mut buffer).expect("the console is open");
        assert!(count > 0, "console closed before {expected:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..count]));
    }
    seen
}

#[test]
fn console_input_reaches_guest_and_tilde_dot_leaves() {
    use std::io::Write;
    let daemon = Daemon::start();
    let kernel = tiny("echo");
    assert_eq!(
        daemon
            .vmctl(&["start", "echo", "-b", &kernel, "-m", "32M"])
            .code,
        0
    );
    let socket = daemon.socket_args();
    let args: Vec<&str> = socket.iter().map(String::as_str).collect();

    let (mut console, mut master) = console_on_pty(&args, "echo");
    read_until(&mut master, "ready\n");
    master.write_all(b"hello").unwrap();
    read_until(&mut master, "HELLO");
    // "~." at the start of a line leaves the console; the VM runs on.
    master.write_all(b"\r~.").unwrap();
    assert!(console.wait().unwrap().success());
    let status = daemon.vmctl(&["status", "echo"]).stdout;
    assert!(status.contains(" running echo"), "{status}");

    // A second session ends when the guest powers off. vmctl announces
    // the session once the terminal is in raw mode, so "q" is not held
    // back by line editing.
    let (mut console, mut master) = console_on_pty(&args, "echo");
    read_until(&mut master, "Connected to");
    master.write_all(b"q").unwrap();
    read_until(&mut master, "bye\n");
    assert!(console.wait().unwrap().success());
    wait_for_state(&daemon, "echo", "stopped");
}

// Runs `vmd -d ARGS` with an empty vm.conf to its end, for starts that
// must fail.
fn vmd_fails(args: &[&str]) -> vmd_tests::CommandOutput {
    let dir = TempDir::new("vmd-fails");
    let config = write_config(&dir, "");
    let output = std::process::Command::new(vmd_tests::bin("vmd"))
        .arg("-d")
        .arg("-f")
        .arg(&config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("vmd runs");
    vmd_tests::CommandOutput::from(output)
}

#[test]
fn second_vmd_on_a_socket_is_refused() {
    let daemon = Daemon::start();
    let socket = daemon.socket_args()[1].clone();
    let out = vmd_fails(&["-s", &socket]);
    out.assert_failed(&format!(
        "vmd: control socket {socket}: another vmd is running on this socket\n"
    ));
    // The first daemon still answers.
    assert_eq!(daemon.vmctl(&["status"]).stdout, HEADER);
}

#[test]
fn file_in_place_of_the_socket_is_kept() {
    let dir = TempDir::new("socket-file");
    let path = dir.path().join("vmd.sock");
    std::fs::write(&path, "precious\n").unwrap();
    let out = vmd_fails(&["-s", path.to_str().unwrap()]);
    out.assert_failed(&format!(
        "vmd: control socket {}: exists and is not a socket\n",
        path.display()
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious\n");
}

#[test]
fn socket_owner_sets_the_socket_owner_and_vmd_removes_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("socket-owner");
    let config = write_config(&dir, "socket owner 65534:65534\n");
    let daemon = Daemon::start_with_config(&config);
    let socket = std::path::PathBuf::from(&daemon.socket_args()[1]);
    let metadata = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777),
        (65534, 65534, 0o660)
    );
    drop(daemon);
    assert!(!socket.exists(), "{} is left behind", socket.display());
}

#[test]
fn clients_over_the_limit_are_told_so() {
    let daemon = Daemon::start();
    let socket = std::path::PathBuf::from(&daemon.socket_args()[1]);
    let address = nix::sys::socket::UnixAddr::new(&socket).unwrap();
    let mut held = Vec::new();
    // vmd serves 256 clients at once.
    for _ in 0..256 {
        let fd = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).unwrap();
        held.push(fd);
    }
    // Let vmd accept them all before the next one comes.
    std::thread::sleep(Duration::from_millis(200));
    let out = daemon.vmctl(&["status"]);
    out.assert_failed("vmctl: too many connections\n");
    // Closed clients free their places once vmd has seen them hang up.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = daemon.vmctl(&["status"]);
        if out.stderr != "vmctl: too many connections\n" || Instant::now() > deadline {
            assert_eq!(out.stdout, HEADER, "{out:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_of_thousands_of_vms_arrives_whole() {
    let dir = TempDir::new("many-vms");
    let kernel = tiny("idle");
    let text: String = (0..3000)
        .map(|i| format!("vm \"v{i}\" {{ disable\n boot \"{kernel}\" }}\n"))
        .collect();
    let config = write_config(&dir, &text);
    let daemon = Daemon::start_with_config(&config);
    let out = daemon.vmctl(&["status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 3001);
    assert!(
        out.stdout.ends_with(" v2999\n"),
        "{}",
        &out.stdout[out.stdout.len() - 200..]
    );
}

#[test]
fn usage_errors_exit_1_and_a_full_stderr_is_no_panic() {
    let run = |program: &str, args: &[&str], stderr: std::process::Stdio| {
        std::process::Command::new(vmd_tests::bin(program))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .status()
            .expect("runs")
            .code()
    };
    let null = std::process::Stdio::null;
    assert_eq!(run("vmctl", &["bogus"], null()), Some(1));
    assert_eq!(run("vmd", &["-x"], null()), Some(1));
    let dir = TempDir::new("full-stderr");
    let bad = write_config(&dir, "vm \"a\" {\n");
    let bad = bad.to_str().unwrap();
    let full = || {
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into()
    };
    assert_eq!(run("vmd", &["-n", "-f", bad], full()), Some(1));
    assert_eq!(run("vmd", &["-d", "-f", bad], full()), Some(1));
    assert_eq!(
        run("vmctl", &["-s", "/nonexistent/sock", "status"], full()),
        Some(1)
    );
}

#[test]
fn second_console_on_a_vm_is_refused() {
    let daemon = Daemon::start();
    let kernel = tiny("idle");
    let out = daemon.vmctl(&["start", "one", "-b", &kernel, "-m", "32M"]);
    assert_eq!(out.code, 0, "{out:?}");
    let tty = out
        .stderr
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let mut first = daemon.spawn_vmctl(&["console", "one"]);
    // Wait until the first session holds its lock on the pty.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&tty).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|line| line.contains("FLOCK") && line.contains(&format!(":{inode} ")))
    {
        assert!(Instant::now() < deadline, "the first console took no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = daemon.vmctl(&["console", "one"]);
    assert_eq!(
        second.stderr,
        format!("vmctl: {tty}: console is in use by another vmctl\n")
    );
    assert_eq!(second.code, 1);
    daemon.vmctl(&["stop", "-f", "one"]);
    first.wait().unwrap();
}
