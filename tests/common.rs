//! Helpers shared by the test modules.

use std::path::PathBuf;

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn read_data(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// etcdutl's status of a golden snapshot, as checked in.
pub fn golden_status(name: &str) -> serde_json::Value {
    serde_json::from_slice(&read_data(&format!("{name}.status.json"))).unwrap()
}

pub const GOLDEN: [&str; 4] = ["empty", "small", "medium", "compacted"];
