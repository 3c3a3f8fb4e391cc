//! `palisade oci`: an OCI image layout per module, in the "compat" format
//! Istio pulls (one `application/vnd.oci.image.layer.v1.tar+gzip` layer
//! holding `plugin.wasm`), without Docker.
//!
//! Everything is reproducible: tar entries carry fixed owners, modes and
//! times, and gzip no timestamp, so the same module always gives the same
//! digests (and `sha256` pins stay valid across rebuilds of the same code).
//!
//! Layout written for `dist/palisade_<name>.wasm` (and `dist/palisade.wasm`,
//! named `palisade`):
//! `dist/oci/<name>/{oci-layout, index.json, blobs/sha256/<digest>...}` and
//! the same tree as `dist/oci/<name>.tar` (skopeo's `oci-archive:`).

use oci_spec::image::{
    Arch, DescriptorBuilder, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest, ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(hex: &str) -> Result<Sha256Digest, String> {
    Sha256Digest::from_str(hex).map_err(|e| e.to_string())
}

/// A tar with fixed metadata, so its bytes depend on the contents only.
fn tar_of(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *data)
            .map_err(|e| format!("tar {path}: {e}"))?;
    }
    builder.into_inner().map_err(|e| format!("tar: {e}"))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).map_err(|e| format!("gzip: {e}"))?;
    encoder.finish().map_err(|e| format!("gzip: {e}"))
}

/// What was written for one module.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub dir: PathBuf,
    pub tarball: PathBuf,
    /// `sha256:<hex>` of the manifest: the image digest (Istio's `sha256` pin).
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    pub wasm_sha256: String,
}

/// The blobs of the image: `(digest hex, bytes)`, and the manifest's digest.
pub struct Blobs {
    pub blobs: Vec<(String, Vec<u8>)>,
    pub index: Vec<u8>,
    pub manifest_hex: String,
    pub config_hex: String,
    pub layer_hex: String,
}

/// Builds the image for a module: layer, config, manifest and index.
pub fn build(name: &str, wasm: &[u8], tag: &str) -> Result<Blobs, String> {
    let err = |e: oci_spec::OciSpecError| e.to_string();
    let layer_tar = tar_of(&[("plugin.wasm", wasm)])?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    let layer = gzip(&layer_tar)?;
    let layer_hex = sha256_hex(&layer);

    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other("wasip1".into()))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()
                .map_err(err)?,
        )
        .build()
        .map_err(err)?;
    let config_bytes = config.to_string().map_err(err)?.into_bytes();
    let config_hex = sha256_hex(&config_bytes);

    // One annotation per map: oci-spec keeps them in a HashMap, whose order
    // (and so the manifest's digest) would vary between runs with two.
    let title = crate::envoy::module_file(name);
    let title = title.trim_end_matches(".wasm");
    let annotations = HashMap::from([(ANNOTATION_TITLE.to_string(), title.to_string())]);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .size(config_bytes.len() as u64)
                .digest(digest(&config_hex)?)
                .build()
                .map_err(err)?,
        )
        .layers(vec![DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .size(layer.len() as u64)
            .digest(digest(&layer_hex)?)
            .build()
            .map_err(err)?])
        .annotations(annotations)
        .build()
        .map_err(err)?;
    let manifest_bytes = manifest.to_string().map_err(err)?.into_bytes();
    let manifest_hex = sha256_hex(&manifest_bytes);

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .size(manifest_bytes.len() as u64)
            .digest(digest(&manifest_hex)?)
            .annotations(HashMap::from([(
                ANNOTATION_REF_NAME.to_string(),
                tag.to_string(),
            )]))
            .build()
            .map_err(err)?])
        .build()
        .map_err(err)?;
    let index_bytes = index.to_string().map_err(err)?.into_bytes();

    Ok(Blobs {
        blobs: vec![
            (layer_hex.clone(), layer),
            (config_hex.clone(), config_bytes),
            (manifest_hex.clone(), manifest_bytes),
        ],
        index: index_bytes,
        manifest_hex,
        config_hex,
        layer_hex,
    })
}

/// Writes `out/<name>/` (the layout) and `out/<name>.tar` for one module.
pub fn write(name: &str, wasm: &[u8], tag: &str, out: &Path) -> Result<Image, String> {
    let b = build(name, wasm, tag)?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|e| e.to_string())?
        .to_string()
        .map_err(|e| e.to_string())?;
    let dir = out.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let blobs_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir).map_err(|e| format!("{}: {e}", blobs_dir.display()))?;
    let write_file = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    write_file(dir.join("oci-layout"), layout.as_bytes())?;
    write_file(dir.join("index.json"), &b.index)?;
    for (hex, bytes) in &b.blobs {
        write_file(blobs_dir.join(hex), bytes)?;
    }
    let blob_paths: Vec<String> = b
        .blobs
        .iter()
        .map(|(hex, _)| format!("blobs/sha256/{hex}"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("oci-layout", layout.as_bytes())];
    entries.push(("index.json", &b.index));
    for (path, (_, bytes)) in blob_paths.iter().zip(&b.blobs) {
        entries.push((path, bytes));
    }
    let tarball = out.join(format!("{name}.tar"));
    write_file(tarball.clone(), &tar_of(&entries)?)?;
    Ok(Image {
        name: name.to_string(),
        dir,
        tarball,
        manifest_digest: format!("sha256:{}", b.manifest_hex),
        config_digest: format!("sha256:{}", b.config_hex),
        layer_digest: format!("sha256:{}", b.layer_hex),
        wasm_sha256: sha256_hex(wasm),
    })
}

/// Every `dist/palisade_<name>.wasm` by name, and `dist/palisade.wasm` as
/// `palisade`.
pub fn modules(dist: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file == crate::envoy::module_file(crate::envoy::MODULE) {
            found.push((crate::envoy::MODULE.to_string(), entry.path()));
        } else if let Some(name) = file
            .strip_prefix("palisade_")
            .and_then(|f| f.strip_suffix(".wasm"))
        {
            found.push((name.to_string(), entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_reproducible_and_change_with_the_module() {
        let a = build("x", b"\0asm\x01\0\0\0", "1").unwrap();
        let b = build("x", b"\0asm\x01\0\0\0", "1").unwrap();
        let c = build("x", b"\0asm\x01\0\0\0\0", "1").unwrap();
        assert_eq!(a.manifest_hex, b.manifest_hex);
        assert_ne!(a.layer_hex, c.layer_hex);
        assert_ne!(a.manifest_hex, c.manifest_hex);
    }
}
