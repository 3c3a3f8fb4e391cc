// Empty: a build script makes cargo resolve the `[build-dependencies]`.
fn main() {}
