//! Home of wirebench's criterion benchmarks (`benches/benches/*.rs`); run them with
//! `cargo bench` from the workspace root.
