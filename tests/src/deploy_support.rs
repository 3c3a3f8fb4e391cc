//! Running a complete bootstrap as written, for the deploy tests.
//!
//! [`crate::Envoy`] builds its bootstrap from an [`crate::EnvoyConfig`]; the
//! deploy tests need Envoy to run a bootstrap that something else rendered
//! (`palisade render envoy`, an Istio `EnvoyFilter` patch placed into a
//! listener), untouched. [`RawEnvoy`] does that: the bootstrap should bind its
//! listener and admin to port 0 on 127.0.0.1; the real ports are read back
//! from the admin address file and the admin `/listeners`, as `Envoy` does.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::client;
use crate::paths::envoy_bin;

/// As `envoy.rs`: palisade.wasm compiles slowly on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// An Envoy running a given bootstrap; stopped when dropped (its log is
/// printed if the test is panicking).
pub struct RawEnvoy {
    child: Option<Child>,
    _tmp: TempDir,
    log_path: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
}

impl RawEnvoy {
    /// Starts Envoy with `bootstrap` (YAML or JSON) and waits until it is
    /// ready; panics with Envoy's log otherwise.
    pub fn start(bootstrap: &str) -> RawEnvoy {
        RawEnvoy::try_start(bootstrap).unwrap_or_else(|e| panic!("Envoy did not start: {e}"))
    }

    /// Starts Envoy with `bootstrap`; `Err` holds the reason and Envoy's log.
    pub fn try_start(bootstrap: &str) -> Result<RawEnvoy, String> {
        let tmp = tempfile::Builder::new()
            .prefix("palisade-deploy-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let config_path = tmp.path().join("envoy.yaml");
        let log_path = tmp.path().join("envoy.log");
        let admin_path = tmp.path().join("admin.address");
        std::fs::write(&config_path, bootstrap).map_err(|e| format!("bootstrap: {e}"))?;
        let log = File::create(&log_path).map_err(|e| format!("log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--use-dynamic-base-id",
            ])
            .args(["--log-level", "info", "--admin-address-path"])
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run Envoy: {e}"))?;
        let mut child = Some(child);
        let ready = wait_ready(&mut child, &admin_path);
        match ready {
            Ok((admin, listener)) => Ok(RawEnvoy {
                child,
                _tmp: tmp,
                log_path,
                admin,
                listener,
            }),
            Err(reason) => {
                stop(&mut child);
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(format!("{reason}\n--- envoy log ---\n{log}"))
            }
        }
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }

    /// The first listener's address.
    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    /// GET `path` from the admin interface; panics unless it answers 200.
    pub fn admin_get(&self, path: &str) -> String {
        let r = client::get(&format!("http://{}{}", self.admin, path), &[]);
        assert_eq!(r.status, 200, "admin GET {path}: {}", r.text());
        r.text()
    }

    /// Everything Envoy wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for RawEnvoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- envoy log ---\n{}--- end of envoy log ---", self.log());
        }
        stop(&mut self.child);
    }
}

fn wait_ready(
    child: &mut Option<Child>,
    admin_path: &Path,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut admin: Option<SocketAddr> = None;
    loop {
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("Envoy exited ({status}) before it was ready"));
            }
        }
        if admin.is_none() {
            admin = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
        if let Some(a) = admin {
            if let Ok(r) = client::try_request("GET", &format!("http://{a}/ready"), &[], b"") {
                if r.status == 200 {
                    let listeners =
                        client::get(&format!("http://{a}/listeners?format=json"), &[]).json();
                    return first_listener(&listeners).map(|l| (a, l));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("Envoy not ready after {READY_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn first_listener(listeners: &Value) -> Result<SocketAddr, String> {
    let sa = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
    let address = sa["address"].as_str().ok_or("no listener address")?;
    let port = sa["port_value"].as_u64().ok_or("no listener port")?;
    format!("{address}:{port}")
        .parse()
        .map_err(|e| format!("listener address: {e}"))
}

fn stop(child: &mut Option<Child>) {
    let Some(mut c) = child.take() else {
        return;
    };
    if let Ok(None) = c.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own
            // child, which has not been reaped yet (try_wait said it is running).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while let Ok(None) = c.try_wait() {
            if Instant::now() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = c.wait();
}
