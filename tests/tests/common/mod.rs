//! Tiny proxy-wasm fixtures assembled from WAT, so the harness tests exercise the wasm
//! filter plumbing (the exact filter config Envoy 1.40 accepts) without depending on
//! the Palisade filters being built. Shared by several test crates, each of
//! which uses only some of it.
#![allow(dead_code)]

use std::path::PathBuf;

use tempfile::TempDir;

/// A fixture module on disk; the file lives as long as this value.
pub struct Fixture {
    _dir: TempDir,
    /// The `.wasm` file.
    pub path: PathBuf,
}

/// A proxy-wasm (ABI 0.2.1) module that adds `x-fixture: ran` to every response and
/// whose `on_configure` returns `configure_ok`.
pub fn fixture_wasm(configure_ok: bool) -> Fixture {
    module(
        if configure_ok {
            "fixture_ok"
        } else {
            "fixture_refuses"
        },
        r#"(import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (data (i32.const 16) "x-fixture")
  (data (i32.const 32) "ran")"#,
        configure_ok,
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    ;; map 2 = response headers
    (drop (call $add_header (i32.const 2) (i32.const 16) (i32.const 9) (i32.const 32) (i32.const 3)))
    (i32.const 0))"#,
    )
}

/// A minimal proxy-wasm module: `imports` (imports and data segments), the
/// ABI entry points every host requires, and `handlers` (the callbacks it
/// implements). Data segments belong below address 65536: the second page is
/// the bump allocator's, which wraps around, enough for a fixture that never
/// keeps host data.
pub fn module(name: &str, imports: &str, configure_ok: bool, handlers: &str) -> Fixture {
    let wat = format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (i32.add (global.get $next) (local.get $size)) (i32.const 131072))
      (then (global.set $next (i32.const 65536))))
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const {ok}))
  {handlers}
)"#,
        ok = i32::from(configure_ok)
    );
    let bytes = wat::parse_str(&wat).expect("fixture WAT assembles");
    let dir = tempfile::Builder::new()
        .prefix("palisade-fixture-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("write fixture");
    Fixture { _dir: dir, path }
}
