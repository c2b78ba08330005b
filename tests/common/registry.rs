//! The real registry (`/usr/bin/docker-registry`, CNCF distribution 2.8.2) as a child process,
//! its config file, and the reference garbage collector.
//!
//! Every invocation removes `AWS_CA_BUNDLE` from the environment (a project rule: the
//! machine's AWS SDK CA override must not leak into the registry's storage drivers) and
//! binds to 127.0.0.1 only.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the Debian package installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long `Registry::start` waits for `GET /v2/` to answer 200.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the registry binary; panics (the test FAILS, it is never skipped) when missing.
pub fn registry_binary() -> PathBuf {
    let p = PathBuf::from(REGISTRY_BIN);
    if !p.is_file() {
        panic!(
            "{REGISTRY_BIN} is missing: the end-to-end tests need the real registry. \
             Install it with `apt-get install docker-registry` (Debian package, distribution 2.8.2)."
        );
    }
    p
}

/// A `Command` for the registry binary with `AWS_CA_BUNDLE` removed.
pub fn registry_command() -> Command {
    let mut cmd = Command::new(registry_binary());
    cmd.env_remove("AWS_CA_BUNDLE");
    cmd
}

/// Returns a port that was free a moment ago on 127.0.0.1 (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local_addr of probe listener").port()
}

/// The YAML text of a registry config for `root` listening on `127.0.0.1:<port>`.
///
/// Filesystem driver, deletes enabled, upload purging disabled (abandoned uploads stay),
/// no `cache: blobdescriptor` section (a cache would hide GC deletions), log level warn,
/// access log off.
pub fn config_yaml(root: &Path, port: u16) -> String {
    let root_str = root
        .to_str()
        .unwrap_or_else(|| panic!("registry root {} is not valid UTF-8", root.display()));
    // A JSON string literal is a valid YAML double-quoted scalar.
    let root_quoted = serde_json::to_string(root_str).unwrap();
    config_yaml_with_driver(
        &format!("  filesystem:\n    rootdirectory: {root_quoted}\n"),
        port,
    )
}

/// The config with another storage driver section (indented under `storage:`).
pub fn config_yaml_with_driver(driver: &str, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n{driver}\
         \x20 delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: \"127.0.0.1:{port}\"\n  secret: \"registry-gc-test-harness\"\n"
    )
}

/// The registry's s3 driver section for a bucket on a local S3 emulator.
pub fn s3_driver_yaml(endpoint: &str, bucket: &str, rootdirectory: &str) -> String {
    format!(
        "  s3:\n    accesskey: test\n    secretkey: test\n    region: us-east-1\n    regionendpoint: {endpoint}\n\
         \x20   bucket: {bucket}\n    rootdirectory: /{rootdirectory}\n    secure: false\n    v4auth: true\n"
    )
}

/// A registry config file written into its own temporary directory (removed on drop).
///
/// Use it for the reference collector on a tree without starting a registry:
/// `let cfg = RegistryConfig::for_root(root); run_reference_gc(cfg.path(), false, false)`.
pub struct RegistryConfig {
    dir: tempfile::TempDir,
    path: PathBuf,
    root: PathBuf,
    port: u16,
}

impl RegistryConfig {
    /// Writes a config for `root` (port 0: fine for `garbage-collect`, which never listens).
    pub fn for_root(root: &Path) -> RegistryConfig {
        Self::with_port(root, 0)
    }

    /// Writes a config with the given storage driver section (see `s3_driver_yaml`).
    pub fn with_driver(driver: &str, port: u16) -> RegistryConfig {
        let dir = tempfile::Builder::new()
            .prefix("registry-gc-config-")
            .tempdir()
            .expect("create temp dir for registry config");
        let path = dir.path().join("config.yml");
        fs::write(&path, config_yaml_with_driver(driver, port))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        RegistryConfig {
            root: dir.path().to_path_buf(),
            dir,
            path,
            port,
        }
    }

    /// Writes a config for `root` that listens on `127.0.0.1:<port>`.
    pub fn with_port(root: &Path, port: u16) -> RegistryConfig {
        let root = &std::path::absolute(root)
            .unwrap_or_else(|e| panic!("cannot make {} absolute: {e}", root.display()));
        let dir = tempfile::Builder::new()
            .prefix("registry-gc-config-")
            .tempdir()
            .expect("create temp dir for registry config");
        let path = dir.path().join("config.yml");
        fs::write(&path, config_yaml(root, port))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        RegistryConfig {
            dir,
            path,
            root: root.to_path_buf(),
            port,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The temporary directory holding config.yml (and the registry's log files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A running `docker-registry serve` on a root directory. Killed on drop.
pub struct Registry {
    child: Option<Child>,
    config: RegistryConfig,
    url: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Registry {
    /// Creates `root` if needed, writes a config, starts the registry and waits (up to
    /// [`START_TIMEOUT`]) until `GET /v2/` answers 200. Panics with the registry's stderr
    /// when it does not come up. Retries with another port if the chosen one was taken.
    pub fn start(root: &Path) -> Registry {
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("create root {}: {e}", root.display()));
        Self::start_with(|port| RegistryConfig::with_port(root, port))
    }

    /// Starts a registry on another storage driver (see `s3_driver_yaml`).
    pub fn start_with_driver(driver: &str) -> Registry {
        Self::start_with(|port| RegistryConfig::with_driver(driver, port))
    }

    /// [`Registry::start`] as another user (`uid`:`gid`), as a packaged registry
    /// runs (Debian's as `docker-registry`): only the caller may be root. The
    /// config's directory is given to that user; `root` must already be its.
    pub fn start_as(root: &Path, uid: u32, gid: u32) -> Registry {
        Self::start_with_user(
            |port| {
                let config = RegistryConfig::with_port(root, port);
                std::os::unix::fs::chown(config.dir(), Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", config.dir().display()));
                config
            },
            Some((uid, gid)),
        )
    }

    fn start_with(make_config: impl Fn(u16) -> RegistryConfig) -> Registry {
        Self::start_with_user(make_config, None)
    }

    fn start_with_user(
        make_config: impl Fn(u16) -> RegistryConfig,
        user: Option<(u32, u32)>,
    ) -> Registry {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Self::try_start(make_config(free_port()), user) {
                Ok(r) => return r,
                Err(e) => {
                    // Only a lost port race is worth retrying.
                    if e.contains("address already in use") {
                        last_err = e;
                        continue;
                    }
                    panic!("{e}");
                }
            }
        }
        panic!("{last_err}");
    }

    fn try_start(config: RegistryConfig, user: Option<(u32, u32)>) -> Result<Registry, String> {
        let port = config.port();
        let root = config.root().to_path_buf();
        let stdout_path = config.dir().join("registry.stdout");
        let stderr_path = config.dir().join("registry.stderr");
        let stdout = fs::File::create(&stdout_path).expect("create registry stdout file");
        let stderr = fs::File::create(&stderr_path).expect("create registry stderr file");
        let mut command = registry_command();
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let child = command
            .arg("serve")
            .arg(config.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot spawn {REGISTRY_BIN} serve: {e}"))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut reg = Registry {
            child: Some(child),
            config,
            url,
            stdout_path,
            stderr_path,
        };

        let deadline = Instant::now() + START_TIMEOUT;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        loop {
            if let Some(status) = reg.child.as_mut().unwrap().try_wait().ok().flatten() {
                let log = reg.logs();
                reg.child = None;
                return Err(format!(
                    "docker-registry exited early ({status}) for root {}:\n{log}",
                    root.display()
                ));
            }
            match agent.get(&format!("{}/v2/", reg.url)).call() {
                Ok(resp) if resp.status() == 200 => return Ok(reg),
                _ => {}
            }
            if Instant::now() > deadline {
                let log = reg.logs();
                reg.kill();
                return Err(format!(
                    "docker-registry did not answer 200 on {}/v2/ within {:?} (root {}):\n{log}",
                    reg.url,
                    START_TIMEOUT,
                    root.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn config_path(&self) -> &Path {
        self.config.path()
    }
    pub fn root(&self) -> &Path {
        self.config.root()
    }
    pub fn port(&self) -> u16 {
        self.config.port()
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The registry's stderr and stdout so far (for panic messages).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, p) in [("stderr", &self.stderr_path), ("stdout", &self.stdout_path)] {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(p) {
                let _ = f.read_to_string(&mut text);
            }
            if !text.is_empty() {
                s.push_str(&format!("--- registry {name} ---\n{text}\n"));
            }
        }
        if s.is_empty() {
            s.push_str("(registry wrote nothing to stdout/stderr)");
        }
        s
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the registry (SIGKILL; every request it answered is already on disk) and waits
    /// for it to exit. Idempotent. Call this before running any collector on its root.
    pub fn stop(&mut self) {
        self.kill();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the reference collector:
/// `docker-registry garbage-collect [--delete-untagged] [--dry-run] <config_path>`.
///
/// The registry serving that root must be STOPPED (or never started): the reference GC is
/// not safe against concurrent pushes, and a running registry would keep stale state.
/// Returns the raw output; check `status` yourself (2.8.2 aborts on several tree shapes).
pub fn run_reference_gc(config_path: &Path, delete_untagged: bool, dry_run: bool) -> Output {
    let mut cmd = registry_command();
    cmd.arg("garbage-collect");
    if delete_untagged {
        cmd.arg("--delete-untagged");
    }
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.arg(config_path);
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {REGISTRY_BIN} garbage-collect: {e}"))
}

/// [`run_reference_gc`] on an arbitrary root (writes a throwaway config) and panics with
/// its output unless it exits 0.
pub fn run_reference_gc_on_root(root: &Path, delete_untagged: bool, dry_run: bool) -> Output {
    let cfg = RegistryConfig::for_root(root);
    let out = run_reference_gc(cfg.path(), delete_untagged, dry_run);
    if !out.status.success() {
        panic!(
            "reference garbage-collect (delete_untagged={delete_untagged}, dry_run={dry_run}) \
             failed on {} with {}:\nstdout:\n{}\nstderr:\n{}",
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}
