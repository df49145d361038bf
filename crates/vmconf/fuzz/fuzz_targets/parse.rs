//! Fuzz target: any bytes given to the vm.conf loader must produce a
//! configuration or diagnostics, never a panic, hang or unbounded memory.
//! A configuration that loads must also print as text that loads again to
//! the same text.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.conf");
    let defines = ["fuzz=/tmp".to_owned()];
    let Ok(loaded) = vmconf::load_bytes(path, data, &defines) else {
        return;
    };
    let dump = loaded.config.to_string();
    let reloaded = vmconf::load_bytes(path, dump.as_bytes(), &[])
        .unwrap_or_else(|errors| panic!("dump does not load again: {errors:?}\n{dump}"));
    assert_eq!(reloaded.config.to_string(), dump, "dump is not stable");
});
