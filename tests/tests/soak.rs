//! The soak in quick mode (16 s of traffic), so `make soak` cannot rot: the whole chain
//! in `palisade.wasm` under the soak's mix on a real Envoy, and the report it
//! writes. The 10-minute run is `make soak` (benches/SOAK.md).
//!
//! Build first: `make build` (writes `dist/palisade.wasm`).

use std::time::Duration;

use palisade_tests::soak::{run, Options};

#[test]
fn a_short_soak_passes_and_writes_its_report() {
    let out = tempfile::tempdir().expect("temp dir");
    // 16 s of traffic: with Envoy compiling palisade.wasm first and stopping
    // after, the test stays under 40 s on a busy machine.
    let mut options = Options::new(Duration::from_secs(16));
    options.sample_every = Duration::from_secs(2);
    // Half the run: in so short a run V8's tier-up and the caches filling are
    // not done after 20% of it, and a 10% rule would only measure the warm-up.
    options.warmup = Duration::from_secs(8);
    options.rps = 150;
    options.out = out.path().to_path_buf();
    let outcome = run(&options).unwrap_or_else(|e| panic!("the soak did not run: {e}"));
    let report = std::fs::read_to_string(&outcome.report).expect("SOAK.md written");
    let plot = std::fs::read_to_string(&outcome.plot).expect("soak.svg written");
    assert!(
        outcome.passed,
        "the soak failed: {:?}\n{report}",
        outcome.failures
    );
    assert!(report.contains("**Verdict: PASS**"), "{report}");
    assert!(report.contains("| time s | RSS MiB |"), "{report}");
    assert!(report.contains("![RSS and request rate over time](soak.svg)"));
    assert!(
        plot.starts_with("<svg") && plot.contains("<polyline"),
        "{plot}"
    );
}
