//! `make soak`: the whole chain in `palisade.wasm` on a real Envoy under
//! mixed traffic for `SOAK_S` seconds; writes `benches/SOAK.md` and
//! `benches/soak.svg` and exits 1 when a check failed (see
//! `palisade_tests::soak`).

use std::process::ExitCode;

use palisade_tests::soak::{run, Options};

fn main() -> ExitCode {
    let options = match Options::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "soak: {} s at {} requests/s, {} clients, Envoy --concurrency {}, module from {}",
        options.duration.as_secs(),
        options.rps,
        options.clients,
        options.concurrency,
        options.dist.display()
    );
    match run(&options) {
        Ok(outcome) => {
            eprintln!(
                "soak: report {} and plot {}",
                outcome.report.display(),
                outcome.plot.display()
            );
            if outcome.passed {
                eprintln!("soak: PASS");
                ExitCode::SUCCESS
            } else {
                for f in &outcome.failures {
                    eprintln!("soak: FAIL: {f}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: could not run: {e}");
            ExitCode::from(2)
        }
    }
}
