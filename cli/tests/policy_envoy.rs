//! `palisade test` and the real Envoy agree: every case of the examples'
//! cases files is run natively by the runner and sent to Envoy running the
//! chain `palisade render envoy` writes (palisade.wasm), with the upstream
//! answering as the case says; status, problem type and upstream headers
//! (every expectation but `decided_by`, which only the fake host's audit
//! record shows) must be the same.
//!
//! Needs `make build` (dist/) and Envoy; run by `make integration`
//! (`cargo test -p palisade-cli -- --ignored`).

use palisade_cli::chain;
use palisade_cli::envoy::{self, Modules};
use palisade_cli::policy::{self, Observed, Runner};
use palisade_tests::deploy_support::RawEnvoy;
use palisade_tests::upstream::{BodyKind, Canned};
use palisade_tests::{client, repo_root, Upstream};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// What Envoy and the upstream saw, in the runner's terms.
fn observed(r: &client::Response, upstream: &Upstream, reached: bool) -> Observed {
    Observed {
        status: r.status,
        headers: r
            .headers
            .iter()
            .flat_map(|(n, vs)| vs.iter().map(move |v| (n.clone(), v.clone())))
            .collect(),
        body: r.body.clone(),
        upstream: if reached {
            upstream.last().map(|u| u.headers)
        } else {
            None
        },
        ..Observed::default()
    }
}

fn agree(chain_file: &str, cases_file: &str) {
    let upstream = Upstream::start();
    let text = std::fs::read_to_string(repo_root().join(chain_file)).unwrap();
    let local = text.replace(
        "http://127.0.0.1:8080",
        &format!("http://127.0.0.1:{}", upstream.port()),
    );
    assert_ne!(
        local, text,
        "{chain_file}: the upstream moved, update this test"
    );
    let chain = chain::load(&local).unwrap_or_else(|p| panic!("{p:?}"));
    let cases_path = repo_root().join(cases_file);
    let cases = std::fs::read_to_string(&cases_path).unwrap();
    let base = cases_path.parent().unwrap();
    let mut suite = policy::load(&cases, base).unwrap_or_else(|p| panic!("{p:?}"));
    let chain = policy::prepare(&chain, &mut suite).unwrap_or_else(|p| panic!("{p:?}"));

    let now = now();
    let runner = Runner::new(&chain, now).unwrap();
    let native = policy::run_all(&runner, &suite);

    let dist = repo_root().join("dist");
    assert!(
        dist.join("palisade.wasm").is_file(),
        "dist/palisade.wasm is missing: run `make build`"
    );
    let options = envoy::Options {
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        wasm_dir: dist.to_string_lossy().into_owned(),
        modules: Modules::Single,
    };
    let proxy = RawEnvoy::start(&envoy::render_text(&chain, &options).unwrap());

    let mut disagreements = Vec::new();
    for (case, fake) in suite.cases.iter().zip(&native) {
        let (status, headers, body) = case.upstream.parts();
        upstream.clear_responses();
        upstream.respond(
            "/",
            Canned {
                status,
                headers,
                body_kind: if body.is_empty() {
                    BodyKind::Empty
                } else {
                    BodyKind::Literal(body)
                },
                ..Canned::default()
            },
        );
        let request = suite.request(case, now).unwrap();
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut last = None;
        for _ in 0..case.repeat {
            upstream.clear_received();
            let r = client::request(
                &request.method,
                &proxy.url(&request.path),
                &headers,
                &request.body,
            );
            let reached = !upstream.received().is_empty();
            last = Some(observed(&r, &upstream, reached));
        }
        let Some(real) = last else { continue };
        let mut expect = case.expect.clone();
        expect.decided_by = None;
        let mut problems = policy::mismatches(&expect, &real);
        if real.status != fake.observed.status {
            problems.push(format!(
                "status: envoy {}, palisade test {}",
                real.status, fake.observed.status
            ));
        }
        if real.problem_type() != fake.observed.problem_type() {
            problems.push(format!(
                "type: envoy {:?}, palisade test {:?}",
                real.problem_type(),
                fake.observed.problem_type()
            ));
        }
        if real.upstream.is_some() != fake.observed.upstream.is_some() {
            problems.push(format!(
                "reached the upstream: envoy {}, palisade test {}",
                real.upstream.is_some(),
                fake.observed.upstream.is_some()
            ));
        }
        if !fake.passed() {
            problems.push(format!("palisade test fails it: {:?}", fake.failures));
        }
        if !problems.is_empty() {
            disagreements.push(format!("{}:\n    {}", case.name, problems.join("\n    ")));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{cases_file}: {} of {} cases differ:\n{}",
        disagreements.len(),
        suite.cases.len(),
        disagreements.join("\n")
    );
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn palisade_test_and_envoy_agree_on_every_case_of_the_example() {
    agree("examples/chain.yaml", "examples/policy-tests.yaml");
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn palisade_test_and_envoy_agree_on_every_jwt_ratelimit_and_schema_case() {
    agree(
        "examples/edge-orders.yaml",
        "examples/policy-tests-edge.yaml",
    );
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn palisade_test_and_envoy_pick_the_same_route_for_tricky_paths() {
    agree(
        "examples/chain.yaml",
        "cli/tests/fixtures/policy/paths.yaml",
    );
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn palisade_test_and_envoy_agree_on_empty_bodies_preflights_and_odd_tokens() {
    agree(
        "examples/edge-orders.yaml",
        "cli/tests/fixtures/policy/edge-more.yaml",
    );
}
