//! proto: see the crate description in Cargo.toml.
