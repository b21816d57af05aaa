//! Shared by the FFI tests, the FFI unit tests and the timing example: a stand-in for a
//! foreign executor, and a loopback-only node config.
#![allow(dead_code)]

mod executor;

pub use executor::block_on;

/// A node config for `dir` bound to 127.0.0.1, every other field at its default.
pub fn loopback_config(dir: &std::path::Path) -> covey_ffi::NodeConfig {
    covey_ffi::NodeConfig {
        data_dir: dir.display().to_string(),
        bind_addr: Some("127.0.0.1:0".into()),
        bootstrap: Vec::new(),
        relay_urls: Vec::new(),
        key_store: None,
        durability: None,
        nat_traversal: false,
        max_payload_bytes: None,
        dht_rendezvous: None,
        dht_max_value_bytes: None,
    }
}
