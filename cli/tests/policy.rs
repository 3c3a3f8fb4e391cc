//! `palisade test` as CI runs it: the built command on the examples, exit
//! codes, failure reports, JUnit output, and the documented cases file (docs/src/deploy/chain-file.md).

use palisade_tests::repo_root;
use std::path::Path;

/// The built `palisade` command, run from the repository root.
fn palisade(args: &[&str]) -> (i32, String, String) {
    palisade_tests::paths::run_in_repo(env!("CARGO_BIN_EXE_palisade"), args)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

/// A temporary cases file beside a copy of the examples' keys.
fn cases_file(dir: &Path, text: &str) -> String {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for key in ["policy-test-es256.pem", "attacker-es256.pem"] {
        std::fs::copy(
            repo_root().join("examples/keys").join(key),
            dir.join("keys").join(key),
        )
        .unwrap();
    }
    let path = dir.join("cases.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn the_example_policies_pass() {
    for (chain, cases) in [
        ("examples/chain.yaml", "examples/policy-tests.yaml"),
        (
            "examples/edge-orders.yaml",
            "examples/policy-tests-edge.yaml",
        ),
        (
            "examples/chain.yaml",
            "cli/tests/fixtures/policy/paths.yaml",
        ),
        (
            "examples/edge-orders.yaml",
            "cli/tests/fixtures/policy/edge-more.yaml",
        ),
    ] {
        let (code, out, err) = palisade(&["test", chain, cases]);
        assert_eq!(code, 0, "{cases}:\n{out}{err}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
        assert!(!out.contains("FAIL"), "{out}");
    }
}

#[test]
fn a_wrong_expectation_fails_the_run_naming_the_case_and_who_decided() {
    let text = read("examples/policy-tests.yaml");
    let wrong = text.replacen(
        "      status: 405\n      type: method-not-allowed\n",
        "      status: 200\n      type: method-not-allowed\n",
        1,
    );
    assert_ne!(wrong, text, "the example changed: update this test");
    let dir = tempfile::tempdir().unwrap();
    let file = cases_file(dir.path(), &wrong);
    let (code, out, err) = palisade(&["test", "examples/chain.yaml", &file]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL  admin refuses DELETE with 405 before the upstream\n"),
        "{out}"
    );
    assert!(out.contains("status: expected 200, got 405"), "{out}");
    assert!(
        out.contains("route admin: decided by headers (deny: method_not_allowed)"),
        "{out}"
    );
    assert!(out.contains(" passed, 1 failed"), "{out}");

    let (code, xml, _) = palisade(&["test", "examples/chain.yaml", &file, "--format", "junit"]);
    assert_eq!(code, 1);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"status: expected 200, got 405\">"),
        "{xml}"
    );
    let (code, xml, _) = palisade(&[
        "test",
        "examples/chain.yaml",
        "examples/policy-tests.yaml",
        "--format",
        "junit",
    ]);
    assert_eq!(code, 0);
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn invalid_files_exit_1_with_their_place_and_missing_ones_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = cases_file(
        dir.path(),
        "cases:\n  - name: a\n    path: /\n    token: {key: corp}\n    expect: {status: 200}\n",
    );
    let (code, _, err) = palisade(&["test", "examples/chain.yaml", &file]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cases.yaml:4: cases[0].token.key: \"corp\" is not under keys"),
        "{err}"
    );
    // A key the chain does not trust, without `provider`.
    let file = cases_file(
        dir.path(),
        "keys:\n  corp: {alg: ES256, private_key_file: keys/attacker-es256.pem}\ncases: [{name: a, path: /, expect: {status: 200}}]\n",
    );
    let (code, _, err) = palisade(&["test", "examples/edge-orders.yaml", &file]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("keys.corp: its public key is in no jwt provider's local_jwks"),
        "{err}"
    );
    let (code, _, err) = palisade(&["test", "examples/chain.yaml", "no/such/cases.yaml"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = palisade(&["test", "examples/chain.yaml"]);
    assert_eq!(code, 2);
}

#[test]
fn a_key_naming_a_provider_tests_a_chain_that_fetches_its_keys() {
    let (code, out, err) = palisade(&[
        "test",
        "examples/edge-jwt-ratelimit.yaml",
        "cli/tests/fixtures/policy/edge-jwt-ratelimit-cases.yaml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 cases: 3 passed, 0 failed"), "{out}");
}

#[test]
fn the_documented_cases_file_passes_against_the_edge_example() {
    let page = read("docs/src/deploy/chain-file.md");
    let section = page
        .split_once("## `palisade test`")
        .map(|(_, s)| s)
        .expect("the chain-file page has a `palisade test` section");
    let block = section
        .split_once("```yaml\n")
        .and_then(|(_, s)| s.split_once("```"))
        .map(|(b, _)| b)
        .expect("a yaml block in it");
    assert!(block.contains("cases:"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let file = cases_file(dir.path(), block);
    let (code, out, err) = palisade(&["test", "examples/edge-orders.yaml", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}
