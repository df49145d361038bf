//! Shared helpers for the integration tests: where the tiny guests and
//! binaries are, and running a tiny guest on the VM engine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vmm::{ConsoleConfig, ConsoleOutput, Kvm, Vm, VmConfig, VmExit};

/// Path of the tiny guest program `name` (built from tests/tiny/NAME.c).
pub fn tiny_guest(name: &str) -> PathBuf {
    PathBuf::from(env!("TINY_GUEST_DIR")).join(format!("{name}.elf"))
}

/// Opens /dev/kvm, failing the test with a clear message when it is
/// missing: these tests need KVM and never pass without it.
pub fn open_kvm() -> Kvm {
    match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => panic!("this test needs /dev/kvm: cannot open it: {e}"),
    }
}

/// What a tiny guest printed and how it ended.
pub struct TinyRun {
    /// Everything the guest wrote to COM1.
    pub console: String,
    /// How the VM ended.
    pub exit: VmExit,
}

/// Boots tiny guest `name` with `cmdline` on `vcpus` vCPUs and 32 MiB of
/// memory, and runs it to its end.
pub fn run_tiny(name: &str, cmdline: &str, vcpus: u8) -> TinyRun {
    let kvm = open_kvm();
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let path = tiny_guest(name);
    let kernel = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open tiny guest {}: {e}", path.display()));
    let vm = Vm::new(
        &kvm,
        VmConfig {
            name: name.to_string(),
            memory_bytes: 32 << 20,
            vcpus,
            kernel,
            initrd: None,
            cmdline: cmdline.to_string(),
            console: ConsoleConfig {
                output: ConsoleOutput::Buffer(buffer.clone()),
                input: None,
            },
            disks: Vec::new(),
        },
    )
    .unwrap_or_else(|e| panic!("cannot build the VM for {name}: {e}"));
    let exit = vm
        .run()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let console = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    TinyRun { console, exit }
}

/// Path of a workspace binary (`vmd`, `vmctl`), found next to the test
/// executable's directory or in `$VMD_BIN_DIR`.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("VMD_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test executable has a path");
            // target/debug/deps/test-hash -> target/debug
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("the test executable is in target/PROFILE/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A vmd running in the foreground on its own socket, stopped on drop.
pub struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    /// Starts vmd with a fresh socket and waits until it accepts requests.
    pub fn start() -> Daemon {
        Daemon::start_with(|command| command)
    }

    /// Starts vmd with configuration file `config`.
    pub fn start_with_config(config: &std::path::Path) -> Daemon {
        Daemon::start_with(|mut command| {
            command.arg("-f").arg(config);
            command
        })
    }

    /// Starts vmd through `wrap`, which may put a command in front of it
    /// (e.g. to run it in another mount namespace).
    pub fn start_with(wrap: impl FnOnce(std::process::Command) -> std::process::Command) -> Daemon {
        open_kvm();
        let dir = TempDir::new("vmd-test");
        let socket = dir.path().join("vmd.sock");
        let mut command = std::process::Command::new(bin("vmd"));
        command.arg("-d").arg("-s").arg(&socket);
        let child = wrap(command)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("vmd starts");
        let daemon = Daemon {
            child,
            socket,
            _dir: dir,
        };
        for _ in 0..200 {
            if daemon.vmctl(&["status"]).stdout.starts_with("   ID") {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("vmd did not answer on {}", daemon.socket.display());
    }

    /// The vmctl arguments that select this daemon's socket.
    pub fn socket_args(&self) -> Vec<String> {
        vec!["-s".to_string(), self.socket.display().to_string()]
    }

    /// Runs vmctl against this daemon.
    pub fn vmctl(&self, args: &[&str]) -> CommandOutput {
        let output = std::process::Command::new(bin("vmctl"))
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("vmctl runs");
        CommandOutput::from(output)
    }

    /// Starts `vmctl ARGS` without waiting for it.
    pub fn spawn_vmctl(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(bin("vmctl"))
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("vmctl runs")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct CommandOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
}

impl CommandOutput {
    /// Asserts that the command failed with exit code 1 after printing
    /// exactly `stderr`.
    #[track_caller]
    pub fn assert_failed(&self, stderr: &str) {
        assert_eq!(self.stderr, stderr);
        assert_eq!(self.code, 1, "{self:?}");
    }
}

impl From<std::process::Output> for CommandOutput {
    fn from(output: std::process::Output) -> CommandOutput {
        CommandOutput {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            code: output.status.code().unwrap_or(-1),
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp directory.
    pub fn new(prefix: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp directory");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Reads a child's stdout line by line on a thread, so a test can wait
/// for a line with a timeout.
pub struct LineReader {
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl LineReader {
    /// Starts reading `stdout`.
    pub fn new(stdout: impl std::io::Read + Send + 'static) -> LineReader {
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let reader = std::io::BufReader::new(stdout);
            for line in reader.split(b'\n') {
                let Ok(line) = line else { return };
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if sender.send(text).is_err() {
                    return;
                }
            }
        });
        LineReader {
            lines,
            seen: Vec::new(),
        }
    }

    /// Returns the next line starting with `prefix`, skipping others;
    /// panics after `timeout` or when the stream ends.
    pub fn expect_prefix(&mut self, prefix: &str, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line starting with {prefix:?} ({e}); console so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until the stream ends; returns the remaining lines.
    pub fn rest(&mut self, timeout: std::time::Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    rest.push(line);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(e) => panic!(
                    "console did not end ({e}); so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// The guest fixture: Debian's cloud kernel and the test initramfs, from
/// `$GUEST_KERNEL` and `$GUEST_INITRD` (set by the nested runner) or
/// build/guest/ (made by tests/guest/build.sh).
pub fn guest_fixture() -> (PathBuf, PathBuf) {
    let from_env = |name: &str, default: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("build/guest")
                    .join(default)
            })
    };
    let kernel = from_env("GUEST_KERNEL", "vmlinuz");
    let initrd = from_env("GUEST_INITRD", "initramfs.cpio");
    for path in [&kernel, &initrd] {
        assert!(
            path.exists(),
            "guest fixture {} is missing: run tests/guest/build.sh",
            path.display()
        );
    }
    (kernel, initrd)
}

/// Seconds since the epoch on this host.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
