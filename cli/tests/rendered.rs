//! The committed deploy files are what the renderer makes of their chain
//! files, Istio's phase/priority reproduce each chain's order, pinning uses
//! the real digests, and the command's exit codes suit CI.

use palisade_cli::{chain, envoy, istio, kong, oci};
use palisade_tests::repo_root;
use serde_json::Value;
use std::process::Command;

fn load(path: &str) -> chain::Chain {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    chain::load(&text).unwrap_or_else(|p| panic!("{path}: {p:?}"))
}

fn committed(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

fn istio_options(kind: istio::Kind) -> istio::Options {
    istio::Options {
        kind,
        ..istio::Options::default()
    }
}

/// The command that regenerates a file, for failure messages.
fn regenerate(cmd: &str) -> String {
    format!("out of date: run `cargo run -p palisade-cli -- {cmd}`")
}

#[test]
fn committed_istio_and_kong_files_are_rendered_from_their_chains() {
    let gateway = load("istio/chain.yaml");
    for (kind, file, flag) in [
        (istio::Kind::WasmPlugin, "istio/wasmplugins.yaml", ""),
        (
            istio::Kind::TrafficExtension,
            "istio/trafficextensions.yaml",
            " --kind traffic-extension",
        ),
        (
            istio::Kind::EnvoyFilter,
            "istio/envoyfilter.yaml",
            " --kind envoy-filter",
        ),
    ] {
        assert_eq!(
            committed(file),
            istio::render(&gateway, &istio_options(kind)).unwrap(),
            "{file} {}",
            regenerate(&format!("render istio istio/chain.yaml{flag} -o {file}"))
        );
    }
    let kong_chain = load("kong/chain.yaml");
    for (form, file, flag) in [
        (kong::Form::FilterChains, "kong/kong.yml", ""),
        (
            kong::Form::Plugins,
            "kong/kong-3.9-plugins.yml",
            " --form plugins",
        ),
    ] {
        assert_eq!(
            committed(file),
            kong::render_text(&kong_chain, form).unwrap(),
            "{file} {}",
            regenerate(&format!("render kong kong/chain.yaml{flag} -o {file}"))
        );
    }
}

fn phase_rank(phase: &str) -> u8 {
    match phase {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        _ => 3,
    }
}

/// Istio orders WasmPlugins by phase (AUTHN, AUTHZ, STATS, then the rest)
/// and, within one, by descending priority: that must be every chain's order.
#[test]
fn istio_phase_and_priority_reproduce_every_chains_order() {
    for path in ["istio/chain.yaml", "examples/chain.yaml"] {
        let c = load(path);
        let text = istio::render(&c, &istio::Options::default()).unwrap();
        let docs: Vec<Value> = text
            .split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect();
        for route in &c.routes {
            let keys: Vec<(u8, i64)> = docs
                .iter()
                .filter(|d| d["metadata"]["labels"]["palisade.dev/route"] == route.name.as_str())
                .map(|d| {
                    let spec = &d["spec"];
                    (
                        phase_rank(spec["phase"].as_str().unwrap()),
                        -spec["priority"].as_i64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(keys.len(), route.filters.len());
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "{path}: route {} is not in chain order: {keys:?}",
                route.name
            );
            for d in docs
                .iter()
                .filter(|d| d["metadata"]["labels"]["palisade.dev/route"] == route.name.as_str())
            {
                let fs = d["spec"]["failStrategy"].as_str().unwrap();
                assert!(["FAIL_CLOSE", "FAIL_OPEN"].contains(&fs), "{fs}");
            }
        }
    }
}

#[test]
fn pinning_uses_the_oci_manifest_digest_or_the_module_digest() {
    let dist = tempfile::tempdir().unwrap();
    let module = b"\0asm\x01\0\0\0\0\x04\x03pin";
    for name in ["errors", "headers"] {
        std::fs::write(dist.path().join(format!("palisade_{name}.wasm")), module).unwrap();
    }
    let image = oci::write("errors", module, "t", &dist.path().join("oci")).unwrap();
    oci::write("headers", module, "t", &dist.path().join("oci")).unwrap();
    let c = load("examples/chain.yaml");
    let pinned = |url: &str| -> Vec<Value> {
        let options = istio::Options {
            url: url.into(),
            pin_from: Some(dist.path().to_path_buf()),
            ..istio::Options::default()
        };
        istio::render(&c, &options)
            .unwrap()
            .split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect()
    };
    let oci_docs = pinned("oci://r.example/palisade/{filter}:t");
    let errors = oci_docs
        .iter()
        .find(|d| d["spec"]["pluginName"] == "palisade.errors")
        .unwrap();
    assert_eq!(
        format!("sha256:{}", errors["spec"]["sha256"].as_str().unwrap()),
        image.manifest_digest
    );
    assert_eq!(errors["spec"]["url"], "oci://r.example/palisade/errors:t");
    let file_docs = pinned("file:///opt/palisade/palisade_{filter}.wasm");
    assert!(file_docs
        .iter()
        .all(|d| d["spec"]["sha256"] == oci::sha256_hex(module).as_str()));
    // A module that was not built cannot be pinned.
    std::fs::remove_file(dist.path().join("palisade_headers.wasm")).unwrap();
    let options = istio::Options {
        url: "file:///x/{filter}.wasm".into(),
        pin_from: Some(dist.path().to_path_buf()),
        ..istio::Options::default()
    };
    assert!(istio::render(&c, &options)
        .unwrap_err()
        .contains("palisade_headers.wasm"));
}

#[test]
fn istio_refuses_hold_headers_which_wasmplugin_cannot_support() {
    let mut text = committed("istio/chain.yaml");
    text = text.replacen("    hold_headers: false\n", "    hold_headers: true\n", 1);
    let c = chain::load(&text).unwrap();
    let err = istio::render(&c, &istio::Options::default()).unwrap_err();
    assert!(
        err.contains("errors: hold_headers needs Envoy's allow_on_headers_stop_iteration"),
        "{err}"
    );
    // EnvoyFilter can set the flag.
    let ef = istio::render(&c, &istio_options(istio::Kind::EnvoyFilter)).unwrap();
    assert!(ef.contains("allow_on_headers_stop_iteration: true"));
}

#[test]
fn the_example_renders_for_every_platform() {
    let c = load("examples/chain.yaml");
    envoy::render_text(&c, &envoy::Options::default()).unwrap();
    istio::render(&c, &istio::Options::default()).unwrap();
    istio::render(&c, &istio_options(istio::Kind::TrafficExtension)).unwrap();
    istio::render(&c, &istio_options(istio::Kind::EnvoyFilter)).unwrap();
    kong::render_text(&c, kong::Form::FilterChains).unwrap();
    kong::render_text(&c, kong::Form::Plugins).unwrap();
}

fn palisade(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_exit_codes_suit_ci() {
    let (code, out, err) = palisade(&["check", "examples/chain.yaml", "kong/chain.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("examples/chain.yaml: ok"));
    // Istio runs Envoy only: its JWKS authority is a Host header, not Kong's host:port.
    let (code, out, err) = palisade(&["check", "--host", "envoy", "istio/chain.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = palisade(&["check", "--host", "kong", "istio/chain.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("remote_jwks.authority"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = committed("examples/chain.yaml").replace(
        "allowed_methods: [GET, HEAD]",
        "allowed_methods: [GET, GTE]",
    );
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = palisade(&["check", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "bad.yaml: routes[1] (admin).filters.headers.request.allowed_methods[1]: unknown method \"GTE\""
        ),
        "{err}"
    );
    // Kong-only refusals are reported with the host.
    let (code, _, err) = palisade(&["render", "kong", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");

    let (code, _, err) = palisade(&["check", "does/not/exist.yaml"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = palisade(&["check"]);
    assert_eq!(code, 2);
    let (code, _, _) = palisade(&["render", "nginx", "examples/chain.yaml"]);
    assert_eq!(code, 2);
}

#[test]
fn schema_prints_each_filters_json_schema() {
    let (code, out, _) = palisade(&["schema", "headers"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["title"], "Config");
    let (code, out, _) = palisade(&["schema", "errors", "--draft4"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["$schema"], "http://json-schema.org/draft-04/schema#");
    let (code, _, err) = palisade(&["schema", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown filter \"nope\""));
}

#[test]
fn meta_writes_one_meta_json_beside_each_module() {
    let dist = tempfile::tempdir().unwrap();
    for name in ["errors", "headers"] {
        std::fs::write(
            dist.path().join(format!("palisade_{name}.wasm")),
            b"\0asm\x01\0\0\0",
        )
        .unwrap();
    }
    let (code, out, err) = palisade(&["meta", "--dist", dist.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    for name in ["errors", "headers"] {
        let written: Value = serde_json::from_str(
            &std::fs::read_to_string(dist.path().join(format!("palisade_{name}.meta.json")))
                .unwrap(),
        )
        .unwrap();
        let f = palisade_cli::registry::find(name).unwrap();
        assert_eq!(written, palisade_cli::meta::meta_json(f).unwrap());
    }
}
