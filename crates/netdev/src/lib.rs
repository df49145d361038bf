//! netdev: see the crate description in Cargo.toml.
