//! The committed deploy files are what the renderer makes of their chain
//! files, Istio's phase/priority reproduce each chain's order, pinning uses
//! the real digests, and the command's exit codes suit CI.

use palisade_cli::envoy::Modules;
use palisade_cli::{chain, envoy, istio, kong, oci};
use palisade_tests::repo_root;
use serde_json::Value;

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

fn per_filter(kind: istio::Kind) -> istio::Options {
    istio::Options {
        kind,
        modules: Modules::PerFilter,
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
    for (modules, dir, flag) in [
        (Modules::Single, "istio", ""),
        (
            Modules::PerFilter,
            "istio/per-filter",
            " --modules per-filter",
        ),
    ] {
        for (kind, file, kind_flag) in [
            (istio::Kind::WasmPlugin, "wasmplugins.yaml", ""),
            (
                istio::Kind::TrafficExtension,
                "trafficextensions.yaml",
                " --kind traffic-extension",
            ),
            (
                istio::Kind::EnvoyFilter,
                "envoyfilter.yaml",
                " --kind envoy-filter",
            ),
        ] {
            let file = format!("{dir}/{file}");
            let options = istio::Options {
                kind,
                modules,
                ..istio::Options::default()
            };
            assert_eq!(
                committed(&file),
                istio::render(&gateway, &options).unwrap(),
                "{file} {}",
                regenerate(&format!(
                    "render istio istio/chain.yaml --url '{}' --no-pin{flag}{kind_flag} -o {file}",
                    istio::DEFAULT_URL
                ))
            );
        }
    }
    let kong_chain = load("kong/chain.yaml");
    for (modules, dir, flag) in [
        (Modules::Single, "kong", ""),
        (
            Modules::PerFilter,
            "kong/per-filter",
            " --modules per-filter",
        ),
    ] {
        for (form, file, form_flag) in [
            (kong::Form::FilterChains, "kong.yml", ""),
            (
                kong::Form::Plugins,
                "kong-3.9-plugins.yml",
                " --form plugins",
            ),
        ] {
            let file = format!("{dir}/{file}");
            if modules == Modules::PerFilter && form == kong::Form::Plugins {
                // Separate filter plugins would lose the chain's order.
                assert!(kong::render_text(&kong_chain, form, modules).is_err());
                assert!(!std::path::Path::new(&format!(
                    "{}/../{file}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .exists());
                continue;
            }
            assert_eq!(
                committed(&file),
                kong::render_text(&kong_chain, form, modules).unwrap(),
                "{file} {}",
                regenerate(&format!(
                    "render kong kong/chain.yaml{flag}{form_flag} -o {file}"
                ))
            );
        }
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .skip(1)
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect()
}

/// By default one resource per workload target loads palisade.wasm, its
/// pluginConfig the chain of the routes on that target, loadable as is.
#[test]
fn istio_renders_palisade_wasm_once_per_target_with_its_routes() {
    let c = load("examples/chain.yaml");
    for kind in [istio::Kind::WasmPlugin, istio::Kind::TrafficExtension] {
        let docs = yaml_docs(&istio::render(&c, &istio_options(kind)).unwrap());
        // Each example route has its own workload.
        assert_eq!(docs.len(), c.routes.len());
        for (d, route) in docs.iter().zip(&c.routes) {
            let spec = &d["spec"];
            let wasm = if kind == istio::Kind::TrafficExtension {
                &spec["wasm"]
            } else {
                spec
            };
            assert_eq!(wasm["pluginName"], "palisade");
            assert_eq!(
                wasm["url"],
                "oci://registry.example.com/palisade/palisade:0.1.0"
            );
            assert_eq!(spec["phase"], "AUTHN");
            // errors and headers only: neither gates traffic.
            assert_eq!(wasm["failStrategy"], "FAIL_OPEN");
            let config = &wasm["pluginConfig"];
            let loaded = chain::load_json(config.to_string().as_bytes()).unwrap();
            let names: Vec<&str> = loaded.routes.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, [route.name.as_str()]);
            let want: Vec<(&str, &serde_json::Value)> = route
                .filters
                .iter()
                .map(|u| (u.filter.name, &u.config))
                .collect();
            let got: Vec<(&str, &serde_json::Value)> = loaded.routes[0]
                .filters
                .iter()
                .map(|u| (u.filter.name, &u.config))
                .collect();
            assert_eq!(got, want, "route {}", route.name);
        }
    }
    // Two routes on one workload share one resource.
    let text = committed("examples/chain.yaml").replace("app: shop-admin", "app: shop-api");
    let shared = chain::load(&text).unwrap();
    let docs = yaml_docs(&istio::render(&shared, &istio::Options::default()).unwrap());
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0]["metadata"]["annotations"]["palisade.dev/routes"],
        "api, admin"
    );
    let routes = docs[0]["spec"]["pluginConfig"]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes.len(), 2);
    // The gateway chain fails closed: jwt and schema must not be skipped.
    let gateway = yaml_docs(&committed("istio/wasmplugins.yaml"));
    let kinds: Vec<&str> = gateway.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["WasmPlugin", "ServiceEntry", "DestinationRule"]);
    assert_eq!(gateway[0]["spec"]["failStrategy"], "FAIL_CLOSE");
    // The key server jwt calls, as the sidecar names and reaches it.
    let jwks =
        &gateway[0]["spec"]["pluginConfig"]["filters"]["jwt"]["providers"]["idp"]["remote_jwks"];
    assert_eq!(jwks["cluster"], "outbound|443||idp.example.com");
    assert_eq!(gateway[1]["spec"]["hosts"][0], "idp.example.com");
    assert_eq!(gateway[1]["spec"]["ports"][0]["number"], 443);
    let tls = &gateway[2]["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"];
    assert_eq!(tls["mode"], "SIMPLE");
    assert_eq!(tls["subjectAltNames"][0], "idp.example.com");
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
        let text = istio::render(&c, &per_filter(istio::Kind::WasmPlugin)).unwrap();
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
    // palisade.wasm: dist/oci/palisade/ and dist/palisade.wasm.
    let one = b"\0asm\x01\0\0\0\0\x04\x03one";
    std::fs::write(dist.path().join("palisade.wasm"), one).unwrap();
    let single = oci::write("palisade", one, "t", &dist.path().join("oci")).unwrap();
    for (url, digest) in [
        (
            "oci://r.example/palisade/{filter}:t",
            single.manifest_digest.clone(),
        ),
        (
            "file:///opt/{filter}.wasm",
            format!("sha256:{}", oci::sha256_hex(one)),
        ),
    ] {
        let options = istio::Options {
            url: url.into(),
            pin_from: Some(dist.path().to_path_buf()),
            ..istio::Options::default()
        };
        let docs = yaml_docs(&istio::render(&c, &options).unwrap());
        assert!(!docs.is_empty());
        for d in docs {
            assert_eq!(
                format!("sha256:{}", d["spec"]["sha256"].as_str().unwrap()),
                digest
            );
            assert_eq!(d["spec"]["url"], url.replace("{filter}", "palisade"));
        }
    }
    let pinned = |url: &str| -> Vec<Value> {
        let options = istio::Options {
            url: url.into(),
            pin_from: Some(dist.path().to_path_buf()),
            ..per_filter(istio::Kind::WasmPlugin)
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
        ..per_filter(istio::Kind::WasmPlugin)
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
    for options in [
        istio::Options::default(),
        per_filter(istio::Kind::WasmPlugin),
    ] {
        let err = istio::render(&c, &options).unwrap_err();
        assert!(
            err.contains("errors: hold_headers needs Envoy's allow_on_headers_stop_iteration"),
            "{err}"
        );
    }
    // EnvoyFilter can set the flag; palisade.wasm's gets it only when a control holds.
    for options in [
        istio_options(istio::Kind::EnvoyFilter),
        per_filter(istio::Kind::EnvoyFilter),
    ] {
        let ef = istio::render(&c, &options).unwrap();
        assert!(ef.contains("allow_on_headers_stop_iteration: true"));
    }
    assert!(!committed("istio/envoyfilter.yaml").contains("allow_on_headers_stop_iteration: true"));
}

#[test]
fn the_example_renders_for_every_platform() {
    let c = load("examples/chain.yaml");
    for modules in [Modules::Single, Modules::PerFilter] {
        let options = envoy::Options {
            modules,
            ..envoy::Options::default()
        };
        envoy::render_text(&c, &options).unwrap();
        for kind in [
            istio::Kind::WasmPlugin,
            istio::Kind::TrafficExtension,
            istio::Kind::EnvoyFilter,
        ] {
            let options = istio::Options {
                kind,
                modules,
                ..istio::Options::default()
            };
            istio::render(&c, &options).unwrap();
        }
        kong::render_text(&c, kong::Form::FilterChains, modules).unwrap();
        // Per filter, the plugins form would lose the example's order.
        let plugins = kong::render_text(&c, kong::Form::Plugins, modules);
        assert_eq!(plugins.is_ok(), modules == Modules::Single, "{plugins:?}");
    }
}

/// 1-based line of the first line containing `needle`.
fn text_line(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// The built `palisade` command, run from the repository root.
fn palisade(args: &[&str]) -> (i32, String, String) {
    palisade_tests::paths::run_in_repo(env!("CARGO_BIN_EXE_palisade"), args)
}

#[test]
fn check_exit_codes_suit_ci() {
    let (code, out, err) = palisade(&["check", "examples/chain.yaml", "kong/chain.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("examples/chain.yaml: ok"));
    // Istio runs Envoy only: its JWKS authority is a Host header, not Kong's
    // host:port. The file's routes have istio sections, so by default it is
    // checked for envoy and istio, never for kong.
    for args in [
        &["check", "istio/chain.yaml"][..],
        &["check", "--platform", "envoy,istio", "istio/chain.yaml"],
    ] {
        let (code, out, err) = palisade(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let (code, _, err) = palisade(&["check", "--platform", "kong", "istio/chain.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("remote_jwks.authority"), "{err}");
    // What `render` refuses, `check` refuses first: two routes ordering
    // filters differently cannot be separate Envoy filters.
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders.yaml");
    std::fs::write(
        &orders,
        "version: 1\nupstreams: {b: 'http://127.0.0.1:1'}\nroutes:\n\
         \x20 - {name: a, match: {prefix: /a/}, upstream: b, filters: [headers, errors]}\n\
         \x20 - {name: c, match: {prefix: /c/}, upstream: b, filters: [errors, headers]}\n",
    )
    .unwrap();
    let orders = orders.to_str().unwrap();
    let (code, out, err) = palisade(&["check", orders]);
    assert_eq!(
        code, 0,
        "palisade.wasm orders each route itself: {out}{err}"
    );
    let (code, _, err) = palisade(&["check", "--modules", "per-filter", orders]);
    assert_eq!(code, 1);
    assert!(err.contains("render envoy: routes a, c order"), "{err}");
    let (code, _, _) = palisade(&["render", "envoy", "--modules", "per-filter", orders]);
    assert_eq!(code, 1, "render refuses what check refused");
}

#[test]
fn render_istio_needs_a_real_url_and_a_per_filter_url_names_each_filter() {
    let (code, _, err) = palisade(&["render", "istio", "istio/chain.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --url"), "{err}");
    let (code, out, err) = palisade(&[
        "render",
        "istio",
        "istio/chain.yaml",
        "--no-pin",
        "--url",
        "oci://r.example/palisade:1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("url: oci://r.example/palisade:1"), "{out}");
    let (code, _, err) = palisade(&[
        "render",
        "istio",
        "istio/chain.yaml",
        "--modules",
        "per-filter",
        "--no-pin",
        "--url",
        "oci://r.example/palisade:1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("has no {filter}"), "{err}");
    // The EnvoyFilter form loads the module from the proxy's disk: no URL.
    let (code, _, err) = palisade(&[
        "render",
        "istio",
        "istio/chain.yaml",
        "--kind",
        "envoy-filter",
    ]);
    assert_eq!(code, 0, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = committed("examples/chain.yaml").replace(
        "allowed_methods: [GET, HEAD]",
        "allowed_methods: [GET, GTE]",
    );
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = palisade(&["check", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let line = text_line(
        &committed("examples/chain.yaml"),
        "allowed_methods: [GET, HEAD]",
    );
    assert!(
        err.contains(&format!(
            "bad.yaml:{line}: routes[1] (admin).filters.headers.request.allowed_methods[1]: unknown method \"GTE\""
        )),
        "{err}"
    );
    // Every problem in one run, each once, each with its line: the chain's
    // own (an unknown filter, a missing upstream) and the filters' configs.
    let worse = dir.path().join("worse.yaml");
    std::fs::write(
        &worse,
        committed("examples/chain.yaml")
            .replace(
                "allowed_methods: [GET, HEAD]",
                "allowed_methods: [GET, GTE]",
            )
            .replace(
                "      - errors\n      - headers:\n          request:",
                "      - errorz\n      - headers:\n          request:",
            ),
    )
    .unwrap();
    let (code, _, err) = palisade(&["check", worse.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("unknown filter \"errorz\"")),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("unknown method \"GTE\"")),
        "{err}"
    );
    assert!(
        lines.iter().all(|l| l
            .split(':')
            .nth(1)
            .is_some_and(|n| n.parse::<u32>().is_ok())),
        "{err}"
    );
    assert!(!err.contains("u64") && !err.contains("struct "), "{err}");
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
    let (code, out, _) = palisade(&["schema", "palisade"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["title"], "ChainFile");
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
    std::fs::write(dist.path().join("palisade.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let (code, out, err) = palisade(&["meta", "--dist", dist.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    // palisade.wasm's: Kong's filter `palisade`, the chain's schema.
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(dist.path().join("palisade.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written, palisade_cli::meta::module_meta_json().unwrap());
    assert!(written["config_schema"]["properties"]["routes"].is_object());
    let (code, printed, _) = palisade(&["meta", "palisade"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&printed).unwrap(), written);
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
