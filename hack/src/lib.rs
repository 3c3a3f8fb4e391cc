//! Empty: this crate exists for its `Cargo.toml` (feature unification across
//! the `make test` commands).
