//! Rust-side reference numbers for `python/bench.py`: the cost of one `status()` call and the
//! rate of sequential 256-byte publishes, measured (1) on `covey_core::Node` directly inside a
//! tokio runtime and (2) through the FFI layer's `Node` from a plain thread, the way a foreign
//! executor drives it (runtime hop, record mapping; no language marshalling).
//!
//! ```sh
//! cargo run --release -p covey-ffi --example ffi_bench -- [status_calls] [publishes]
//! ```
//! Nodes bind 127.0.0.1 and dial nobody.

use std::time::Instant;

#[path = "../tests/support/mod.rs"]
mod support;

use support::block_on;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn report(what: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what:<44} {n:>6} calls  {:>9.1} µs/call  {:>9.0} calls/s",
        secs * 1e6 / n as f64,
        n as f64 / secs
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let status_calls = arg(1, 2000);
    let publishes = arg(2, 2000);
    let payload = vec![0x5a_u8; 256];
    let tmp = tempfile::tempdir()?;

    // 1. The core, awaited inside a tokio runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let node =
            covey_core::Node::open(covey_core::NodeConfig::loopback(tmp.path().join("core")))
                .await?;
        let group = node.join_passphrase("bench passphrase", "bench").await?;
        for _ in 0..100 {
            node.status().await?;
        }
        let start = Instant::now();
        for _ in 0..status_calls {
            node.status().await?;
        }
        report("core  status() (tokio)", status_calls, start);
        let start = Instant::now();
        for _ in 0..publishes {
            node.publish(&group.group_id, &payload, None).await?;
        }
        report("core  publish(256 B) sequential (tokio)", publishes, start);
        node.shutdown().await?;
        Ok::<_, covey_core::CoveyError>(())
    })?;
    drop(rt);

    // 2. The FFI layer's Node, from a plain thread.
    block_on(async {
        let node = covey_ffi::Node::open(support::loopback_config(&tmp.path().join("ffi"))).await?;
        let group = node
            .join_passphrase("bench passphrase".into(), "bench".into())
            .await?;
        for _ in 0..100 {
            node.status().await?;
        }
        let start = Instant::now();
        for _ in 0..status_calls {
            node.status().await?;
        }
        report("ffi   status() (plain thread)", status_calls, start);
        let start = Instant::now();
        for _ in 0..publishes {
            node.publish(group.group_id.clone(), payload.clone(), None)
                .await?;
        }
        report(
            "ffi   publish(256 B) sequential (plain thread)",
            publishes,
            start,
        );
        node.shutdown().await?;
        Ok::<_, covey_ffi::CoveyError>(())
    })?;
    Ok(())
}
