//! `palisade oci`: the image layouts it writes are valid OCI layouts in
//! Istio's compat format, every digest and size checks out, and the layer's
//! `plugin.wasm` is byte-identical to the module.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Files of a (plain) tar: path → bytes.
fn untar(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    files
}

/// Reads a blob and checks it against its descriptor (digest and size).
fn blob(files: &BTreeMap<String, Vec<u8>>, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").expect("sha256 digests");
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest} is missing"))
        .clone();
    assert_eq!(
        sha256_hex(&data),
        hex,
        "blob {digest}: content does not match its digest"
    );
    assert_eq!(
        descriptor["size"].as_u64(),
        Some(data.len() as u64),
        "blob {digest}: size"
    );
    data
}

/// Walks index.json → manifest → config and layer, as a registry client
/// (and Istio's fetcher) would; returns the plugin.wasm the layer holds and
/// the manifest digest.
fn verify_layout(files: &BTreeMap<String, Vec<u8>>, tag: &str) -> (Vec<u8>, String) {
    assert_eq!(
        json(&files["oci-layout"])["imageLayoutVersion"],
        "1.0.0",
        "oci-layout"
    );
    let index = json(&files["index.json"]);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        tag
    );
    let manifest = json(&blob(files, &manifests[0]));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = json(&blob(files, &manifest["config"]));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "compat format: one layer");
    // The media type Istio's compat reader requires.
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(files, &layers[0]);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(layer.as_slice())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&tar_bytes)),
        "diff_id is the digest of the uncompressed layer"
    );
    assert_eq!(config["rootfs"]["type"], "layers");
    let layer_files = untar(&tar_bytes);
    assert_eq!(
        layer_files.keys().collect::<Vec<_>>(),
        ["plugin.wasm"],
        "the layer holds plugin.wasm only"
    );
    let digest = manifests[0]["digest"].as_str().unwrap().to_string();
    (layer_files["plugin.wasm"].clone(), digest)
}

/// The layout directory's files, by path relative to it.
fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs `palisade oci --dist <dist> --out <out> --tag <tag>`; returns stdout.
fn palisade_oci(dist: &Path, out: &Path, tag: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["oci", "--dist"])
        .arg(dist)
        .arg("--out")
        .arg(out)
        .args(["--tag", tag])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "palisade oci failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Checks both the directory and the tarball of every module in `dist`.
fn verify_all(dist: &Path, names: &[String], tag: &str) {
    let out = tempfile::tempdir().unwrap();
    let printed = palisade_oci(dist, out.path(), tag);
    for name in names {
        let wasm = std::fs::read(dist.join(palisade_cli::envoy::module_file(name))).unwrap();
        let (from_dir, digest) = verify_layout(&read_dir_files(&out.path().join(name)), tag);
        assert!(
            from_dir == wasm,
            "{name}: plugin.wasm differs from the module"
        );
        let tarball = std::fs::read(out.path().join(format!("{name}.tar"))).unwrap();
        let (from_tar, tar_digest) = verify_layout(&untar(&tarball), tag);
        assert!(
            from_tar == wasm,
            "{name}: plugin.wasm in the tarball differs"
        );
        assert_eq!(digest, tar_digest);
        assert!(
            printed
                .lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains(&digest)),
            "the manifest digest of {name} is printed: {printed}"
        );
    }
    // Reproducible: the same modules give the same digests.
    let again = tempfile::tempdir().unwrap();
    assert_eq!(
        palisade_oci(dist, again.path(), tag),
        printed.replace(
            &out.path().display().to_string(),
            &again.path().display().to_string()
        )
    );
}

#[test]
fn layouts_of_modules_are_valid_compat_images() {
    let dist = tempfile::tempdir().unwrap();
    // Two small modules (a valid wasm header and a custom section).
    std::fs::write(dist.path().join("palisade_alpha.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(
        dist.path().join("palisade_beta.wasm"),
        b"\0asm\x01\0\0\0\0\x05\x04beta",
    )
    .unwrap();
    std::fs::write(dist.path().join("other.wasm"), b"\0asm\x01\0\0\0").unwrap();
    // palisade.wasm, the one-VM module, is the image `palisade`.
    std::fs::write(
        dist.path().join("palisade.wasm"),
        b"\0asm\x01\0\0\0\0\x04\x03one",
    )
    .unwrap();
    verify_all(
        dist.path(),
        &["alpha".into(), "beta".into(), "palisade".into()],
        "1.2.3",
    );
    let out = tempfile::tempdir().unwrap();
    palisade_oci(dist.path(), out.path(), "x");
    assert!(
        !out.path().join("other").exists(),
        "only palisade_<name>.wasm modules"
    );
}

#[test]
#[ignore = "needs `make build`: run by `make integration`"]
fn layouts_of_the_built_filters_hold_them_byte_for_byte() {
    let dist: PathBuf = palisade_tests::repo_root().join("dist");
    let names: Vec<String> = palisade_cli::oci::modules(&dist)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for required in ["errors", "headers", "palisade"] {
        assert!(
            names.iter().any(|n| n == required),
            "dist/{} is missing: run `make build`",
            palisade_cli::envoy::module_file(required)
        );
    }
    verify_all(&dist, &names, env!("CARGO_PKG_VERSION"));
}
