//! `make run` end to end: the demo script starts Envoy with every built filter
//! in front of the demo upstream, the advertised curls behave as printed, and
//! Ctrl-C stops everything. Also keeps `envoy/envoy.yaml` in step with it.

use palisade_tests::{client, envoy_bin, ports::free_port, repo_root};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Demo {
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_demo(ports: (u16, u16, u16)) -> Demo {
    let mut child = Command::new("python3")
        .arg(repo_root().join("envoy/run_demo.py"))
        .arg("--ports")
        .arg(format!("{},{},{}", ports.0, ports.1, ports.2))
        .env("ENVOY_BIN", envoy_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the demo script");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if line.starts_with("Ctrl-C stops") {
                    break;
                }
            }
            Err(e) => panic!("demo never became ready ({e}); it printed:\n{printed}"),
        }
    }
    assert!(
        printed.contains("with chain: errors -> headers"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("curl -si http://127.0.0.1:{}/boom", ports.0)),
        "{printed}"
    );
    Demo { child }
}

#[test]
fn make_run_demo_shows_each_control_and_stops_on_ctrl_c() {
    let ports = (free_port(), free_port(), free_port());
    let mut demo = start_demo(ports);
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", ports.0);

    let ok = client::get(&url("/hello"), &[]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(ok.header("x-powered-by"), None);
    assert_eq!(ok.header("server"), None);

    let echo = client::get(
        &url("/whoami"),
        &[("x-jwt-sub", "admin"), ("x-palisade-jwt", "allow")],
    );
    let seen = echo.json();
    assert!(seen["headers"].get("x-jwt-sub").is_none(), "{seen}");
    assert_ne!(seen["headers"]["x-palisade-jwt"], "allow", "{seen}");

    let trace = client::request("TRACE", &url("/hello"), &[], b"");
    assert_eq!(trace.status, 405);
    assert!(trace.header("allow").is_some_and(|a| a.contains("GET")));
    // The headers filter's own problem passes the errors filter untouched,
    // and the internal marker stops there.
    assert_eq!(
        trace.json()["type"],
        "urn:palisade:problem:method-not-allowed"
    );
    assert_eq!(trace.header("x-palisade-denied-by"), None);

    let boom = client::get(&url("/boom"), &[]);
    assert_eq!(boom.status, 500);
    assert_eq!(
        boom.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        !boom.text().contains("NullPointerException"),
        "{}",
        boom.text()
    );
    assert!(boom.header("x-backend-host").is_none());
    assert_eq!(
        boom.json()["request_id"].as_str(),
        boom.header("x-request-id")
    );

    let leak = client::get(&url("/leak"), &[]);
    assert_eq!(leak.status, 404);
    assert_eq!(
        leak.header("content-type"),
        Some("application/problem+json")
    );
    assert!(!leak.text().contains("Traceback"), "{}", leak.text());

    let gone = client::get(&url("/gone"), &[]);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.text(), r#"{"error":"no such order"}"#);

    let stats = client::get(
        &format!("http://127.0.0.1:{}/stats?filter=palisade", ports.1),
        &[],
    );
    assert!(
        stats.text().contains("wasmcustom.palisade.errors."),
        "{}",
        stats.text()
    );

    // Ctrl-C: the script stops Envoy and the upstream, then exits.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGINT) };
    let mut exited = false;
    for _ in 0..100 {
        if let Ok(Some(_)) = demo.child.try_wait() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exited, "the demo did not stop on SIGINT");
    assert!(client::try_request("GET", &url("/hello"), &[], b"").is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports.2)).is_err());
}

#[test]
fn checked_in_envoy_yaml_is_the_rendered_demo_chain() {
    let out = Command::new("python3")
        .arg(repo_root().join("envoy/run_demo.py"))
        .arg("--render")
        .output()
        .expect("python3 runs the demo script");
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        checked_in,
        "envoy/envoy.yaml is stale: run `python3 envoy/run_demo.py --render > envoy/envoy.yaml`"
    );
}
