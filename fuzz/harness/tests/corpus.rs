//! Replays every committed corpus file through its target's entry
//! function, on stable: a finding once fixed stays fixed. A target
//! without a corpus fails, so the replay cannot pass vacuously.

use std::path::Path;

#[test]
fn every_corpus_file_replays_without_a_finding() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for (name, target) in palisade_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.expect("a readable corpus entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("a readable corpus file");
                target(&data);
                files += 1;
            }
        }
        assert!(files > 0, "corpus {} is empty", dir.display());
    }
}

#[test]
fn every_fuzz_target_has_a_harness_entry() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz_targets");
    let mut found: Vec<String> = std::fs::read_dir(&targets)
        .expect("fuzz/fuzz_targets")
        .filter_map(|e| {
            let p = e.ok()?.path();
            Some(p.file_stem()?.to_str()?.to_string())
        })
        .collect();
    found.sort();
    let mut names: Vec<String> = palisade_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(
        found, names,
        "fuzz/fuzz_targets and palisade_fuzz::TARGETS differ"
    );
}
