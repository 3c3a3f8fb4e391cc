//! Certificates made at test time with `openssl`, the listener settings
//! that ask clients for one, and a `curl` client that presents one: for the
//! suites that check workload identity (mTLS) inside a real Envoy.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A CA made in `dir` under `name` (`<name>.pem`, `<name>.key`).
pub fn make_ca(dir: &Path, name: &str) -> CertFiles {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    CertFiles {
        cert: dir.join(pem),
        key: dir.join(key),
    }
}

/// A certificate `name` signed by `ca` with the extensions `ext` (an
/// openssl extfile's lines, e.g. `subjectAltName=URI:spiffe://td/sa/x`).
pub fn make_cert(dir: &Path, ca: &CertFiles, name: &str, ext: &str) -> CertFiles {
    let (key, csr, pem, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(&extfile), format!("{ext}\n")).expect("extfile");
    let (ca_cert, ca_key) = (
        ca.cert.to_string_lossy().into_owned(),
        ca.key.to_string_lossy().into_owned(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ],
    );
    CertFiles {
        cert: dir.join(pem),
        key: dir.join(key),
    }
}

/// A listener's `transport_socket`: TLS with `server`'s certificate,
/// asking clients for one and verifying it against `client_ca`, without
/// requiring it (a client without one still reaches the filters).
pub fn downstream_mtls(server: &CertFiles, client_ca: &Path) -> Value {
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": false,
        "common_tls_context": {
            "tls_certificates": [{
                "certificate_chain": {"filename": server.cert},
                "private_key": {"filename": server.key}}],
            "validation_context": {"trusted_ca": {"filename": client_ca}}}}})
}

/// What `curl` got: the status (0 when no HTTP answer came) and curl's exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlResult {
    /// HTTP status, 0 without an answer (a refused handshake).
    pub status: u16,
    /// curl's exit code (0: an HTTP answer came).
    pub exit: i32,
    /// The response body.
    pub body: String,
}

/// `GET https://127.0.0.1:<port><path>` trusting `server_ca`, presenting
/// `client` if given, with `headers`.
pub fn curl_get(
    port: u16,
    path: &str,
    server_ca: &Path,
    client: Option<&CertFiles>,
    headers: &[(&str, &str)],
) -> CurlResult {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(server_ca);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    for (n, v) in headers {
        cmd.arg("-H").arg(format!("{n}: {v}"));
    }
    cmd.arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    CurlResult {
        status: code.trim().parse().unwrap_or(0),
        exit: out.status.code().unwrap_or(-1),
        body: body.to_string(),
    }
}
