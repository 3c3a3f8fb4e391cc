//! Starting and stopping a real Envoy per test.
//!
//! Each `Envoy` gets its own temp dir holding the bootstrap (`envoy.yaml`), Envoy's
//! output (`envoy.log`: stdout and stderr) and the admin address file. Listener and
//! admin bind port 0 and the real ports are read back (`--admin-address-path`, then the
//! admin `/listeners`), so parallel tests cannot race for ports; hot restart is
//! disabled and the base id is dynamic, so parallel Envoys share no memory.
//!
//! ## Docker
//!
//! With `PALISADE_ENVOY_IMAGE` set (e.g. `envoyproxy/envoy:v1.40-latest`), Envoy runs as
//! `docker run --rm --name <unique> --network host -e ENVOY_UID=0 -v <tmp>:<tmp>
//! -v <repo>/dist:<repo>/dist:ro [-v <dir of each other wasm file>:ro] <image> envoy <args>`:
//! the host network keeps the loopback addresses and ports identical, the same-path
//! mounts keep file paths in the bootstrap valid, and `ENVOY_UID=0` lets the image's
//! entrypoint run Envoy as root so it can write the admin address file into the temp
//! dir (which only its owner may write). The readiness timeout becomes 120 s; pull the
//! image beforehand all the same. Linux only (host networking). Stopping runs `docker rm -f <name>` and then stops the
//! `docker run` client by pid. `ENVOY_BIN` is ignored in that mode.
//!
//! Set `PALISADE_KEEP_TMP=1` to keep the temp dirs for inspection.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::config::{EnvoyConfig, RuntimePorts, Target};
use crate::paths::{envoy_bin, repo_root};
use crate::ports::{BlackHole, ClosedPort};

/// Readiness timeout for a local binary: palisade.wasm's compile takes
/// over 30 s on two loaded cores (seen in `make test` beside other builds);
/// a ready Envoy answers at once, so only a broken start waits this long.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Readiness timeout with Docker (container start, maybe an image pull).
const DOCKER_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time Envoy gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running Envoy; stopped (SIGTERM, then SIGKILL) when dropped. If the test is
/// panicking at that moment, Envoy's log is printed to stderr to show why.
pub struct Envoy {
    child: Option<Child>,
    docker_name: Option<String>,
    tmp: Option<TempDir>,
    dir: PathBuf,
    log_path: PathBuf,
    config_path: PathBuf,
    admin: Option<SocketAddr>,
    listener: Option<SocketAddr>,
    _closed: Option<ClosedPort>,
    _black_hole: Option<BlackHole>,
}

impl Envoy {
    /// Starts Envoy with `config` and waits until it is ready; panics with Envoy's log
    /// if it exits or is not ready in time.
    pub fn start(config: &EnvoyConfig) -> Envoy {
        Envoy::try_start(config).unwrap_or_else(|e| panic!("Envoy did not start: {e}"))
    }

    /// Starts Envoy with `config`; `Err` holds the reason and Envoy's log, for tests
    /// asserting that Envoy refuses a config (e.g. a filter whose `on_configure` fails).
    pub fn try_start(config: &EnvoyConfig) -> Result<Envoy, String> {
        let tmp = tempfile::Builder::new()
            .prefix("palisade-envoy-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        let closed = config.uses(&Target::ClosedPort).then(ClosedPort::reserve);
        let black_hole = config.uses(&Target::BlackHole).then(BlackHole::start);
        let yaml = config.render(RuntimePorts {
            closed: closed.as_ref().map(ClosedPort::port),
            black_hole: black_hole.as_ref().map(BlackHole::port),
        });
        let config_path = dir.join("envoy.yaml");
        let log_path = dir.join("envoy.log");
        let admin_path = dir.join("admin.address");
        std::fs::write(&config_path, yaml).map_err(|e| format!("writing the bootstrap: {e}"))?;

        let mut args: Vec<String> = vec![
            "-c".into(),
            config_path.to_string_lossy().into_owned(),
            "--concurrency".into(),
            config.concurrency.to_string(),
            "--disable-hot-restart".into(),
            "--use-dynamic-base-id".into(),
            "--log-level".into(),
            config.log_level.clone(),
            "--admin-address-path".into(),
            admin_path.to_string_lossy().into_owned(),
        ];
        if let Some(levels) = &config.component_log_level {
            args.push("--component-log-level".into());
            args.push(levels.clone());
        }
        if let Some(ms) = config.file_flush_interval_ms {
            args.push("--file-flush-interval-msec".into());
            args.push(ms.to_string());
        }

        let image = std::env::var("PALISADE_ENVOY_IMAGE")
            .ok()
            .filter(|i| !i.is_empty());
        let (mut command, docker_name, default_timeout) = match image {
            Some(image) => {
                let (command, name) = docker_command(&image, &dir, config);
                (command, Some(name), DOCKER_READY_TIMEOUT)
            }
            None => (Command::new(envoy_bin()), None, READY_TIMEOUT),
        };
        let log = File::create(&log_path).map_err(|e| format!("creating the log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("duplicating the log: {e}"))?;
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {command:?}: {e}"))?;

        let mut envoy = Envoy {
            child: Some(child),
            docker_name,
            tmp: Some(tmp),
            dir,
            log_path,
            config_path,
            admin: None,
            listener: None,
            _closed: closed,
            _black_hole: black_hole,
        };
        let timeout = config.startup_timeout.unwrap_or(default_timeout);
        match envoy.wait_ready(&admin_path, timeout) {
            Ok(()) => Ok(envoy),
            Err(reason) => {
                envoy.stop();
                Err(format!(
                    "{reason}\n--- envoy log ({}) ---\n{}",
                    envoy.log_path.display(),
                    envoy.log()
                ))
            }
        }
    }

    fn wait_ready(&mut self, admin_path: &Path, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("Envoy exited ({status}) before it was ready"));
                }
            }
            if self.admin.is_none() {
                self.admin = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            if let Some(admin) = self.admin {
                if let Ok((200, _)) = http(admin, "GET", "/ready") {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("Envoy not ready after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, listeners) = self.admin_request("GET", "/listeners?format=json")?;
        self.listener = Some(main_listener(&listeners)?);
        Ok(())
    }

    /// The listener's address (127.0.0.1:port), e.g. for `client::raw_http`.
    pub fn listener_addr(&self) -> SocketAddr {
        self.listener.expect("Envoy is ready")
    }

    /// `http://127.0.0.1:<listener port>`.
    pub fn listener_url(&self) -> String {
        format!("http://{}", self.listener_addr())
    }

    /// `listener_url()` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.listener_url(), path)
    }

    /// The admin interface's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("Envoy is ready")
    }

    /// `http://127.0.0.1:<admin port>`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr())
    }

    /// Sends `method path` to the admin interface: `(status, body)`.
    pub fn admin_request(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let admin = self.admin.ok_or("the admin address is not known yet")?;
        http(admin, method, path)
    }

    /// GET `path` from the admin interface; panics unless it answers 200.
    pub fn admin_get(&self, path: &str) -> String {
        match self.admin_request("GET", path) {
            Ok((200, body)) => body,
            other => panic!("admin GET {path}: {other:?}"),
        }
    }

    /// All stats as text (`/stats`).
    pub fn stats(&self) -> String {
        self.admin_get("/stats")
    }

    /// The value of the counter or gauge `name` (exact name, e.g.
    /// `http.ingress.downstream_rq_5xx` or `wasmcustom.palisade_x`), `None` if absent.
    pub fn counter(&self, name: &str) -> Option<u64> {
        let filter = percent_encode(&format!("^{}$", regex_escape(name)));
        let stats = self.admin_get(&format!("/stats?filter={filter}"));
        stats.lines().find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Polls `counter(name)` until it reaches `at_least` or `timeout` passes; returns the
    /// last value seen. Stats are updated after the response is sent, so a test that
    /// checks one right after a request may need to wait.
    pub fn wait_for_counter(&self, name: &str, at_least: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.counter(name);
            if value.is_some_and(|v| v >= at_least) || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything Envoy wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// The bootstrap Envoy was given (YAML).
    pub fn config_yaml(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// This Envoy's temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id (of the `docker run` client with Docker).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stop(&mut self) {
        if let Some(name) = self.docker_name.take() {
            let _ = Command::new("docker")
                .args(["rm", "-f", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own
                // child, which has not been reaped yet (try_wait said it is running).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + STOP_GRACE;
            while let Ok(None) = child.try_wait() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log ({}) ---\n{}--- end of envoy log ---",
                self.log_path.display(),
                self.log()
            );
        }
        self.stop();
        if std::env::var_os("PALISADE_KEEP_TMP").is_some() {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("keeping {}", tmp.keep().display());
            }
        }
    }
}

/// The `docker run` command and the container name.
fn docker_command(image: &str, dir: &Path, config: &EnvoyConfig) -> (Command, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "palisade-envoy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dist = repo_root().join("dist");
    let mut mounts = vec![format!("{0}:{0}", dir.display())];
    if dist.is_dir() {
        mounts.push(format!("{0}:{0}:ro", dist.display()));
    }
    for wasm in config.wasm_files() {
        if let Some(parent) = wasm.parent() {
            if !parent.starts_with(&dist) && !parent.starts_with(dir) {
                mounts.push(format!("{0}:{0}:ro", parent.display()));
            }
        }
    }
    mounts.dedup();
    let mut command = Command::new("docker");
    command.args([
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        "host",
        "-e",
        "ENVOY_UID=0",
    ]);
    for mount in mounts {
        command.args(["-v", &mount]);
    }
    command.args([image, "envoy"]);
    (command, name)
}

/// The address of listener `main` from `/listeners?format=json`.
fn main_listener(json: &str) -> Result<SocketAddr, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("/listeners: {e}: {json}"))?;
    let statuses = v["listener_statuses"]
        .as_array()
        .ok_or_else(|| format!("/listeners has no listener_statuses: {json}"))?;
    let main = statuses
        .iter()
        .find(|l| l["name"] == "main")
        .ok_or_else(|| format!("/listeners has no listener `main`: {json}"))?;
    let socket = &main["local_address"]["socket_address"];
    let address = socket["address"].as_str().unwrap_or("127.0.0.1");
    let port = socket["port_value"]
        .as_u64()
        .ok_or_else(|| format!("listener `main` has no port: {json}"))?;
    format!("{address}:{port}")
        .parse()
        .map_err(|e| format!("listener address: {e}"))
}

/// A minimal HTTP/1.0 exchange for the admin interface (trusted, small answers).
fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .and_then(|_| stream.set_write_timeout(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let response = crate::client::parse_response(&raw, method == "HEAD", true)
        .filter(|r| r.status.is_some())
        .ok_or_else(|| {
            format!(
                "no HTTP response from {addr}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })?;
    let status = response.status.unwrap_or_default();
    let body = String::from_utf8_lossy(&response.body).into_owned();
    Ok((status, body))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listener_address() {
        let json = r#"{"listener_statuses":[{"name":"main","local_address":{"socket_address":{"address":"127.0.0.1","port_value":4242}}}]}"#;
        assert_eq!(
            main_listener(json).unwrap(),
            "127.0.0.1:4242".parse().unwrap()
        );
    }

    #[test]
    fn stats_filter_is_an_escaped_anchored_regex() {
        assert_eq!(
            percent_encode(&format!("^{}$", regex_escape("http.ingress.rq"))),
            "%5Ehttp%5C.ingress%5C.rq%24"
        );
    }
}
