//! The raw iroh baselines: loopback-only endpoints configured like covey's own, carrying the
//! same bytes as the part they are compared to with nothing of covey's around them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use iroh::endpoint::{PortmapperConfig, presets};
use iroh::{Endpoint, NetReportConfig, RelayMode};

use crate::harness::{SYNC_DEADLINE, random_bytes};
use crate::sysinfo::process_cpu_s;

/// ALPN of the raw iroh transfer baseline.
const RAW_ALPN: &[u8] = b"covey-bench/raw/0";

/// A loopback-only raw iroh endpoint, configured like covey's own without NAT traversal.
pub(crate) async fn raw_endpoint(alpns: Vec<Vec<u8>>) -> Result<Endpoint> {
    let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    Endpoint::builder(presets::Minimal)
        .clear_address_lookup()
        .relay_mode(RelayMode::Disabled)
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .clear_ip_transports()
        .bind_addr(loopback)
        .map_err(|e| anyhow!("bad bind address {loopback}: {e}"))?
        .alpns(alpns)
        .bind()
        .await
        .map_err(|e| anyhow!("binding a raw loopback endpoint: {e}"))
}

/// Raw baseline: `n` length-prefixed messages of `len` bytes over one iroh bi-stream.
/// Returns (seconds including connect, seconds of the stream transfer alone, process CPU
/// seconds).
pub(crate) async fn raw_transfer(n: usize, len: usize) -> Result<(f64, f64, f64)> {
    let server = raw_endpoint(vec![RAW_ALPN.to_vec()]).await?;
    let client = raw_endpoint(Vec::new()).await?;
    let addr = server.addr();
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.context("server endpoint closed")?;
            let conn = incoming.await.context("accepting raw connection")?;
            let (_send, mut recv) = conn.accept_bi().await.context("accept_bi")?;
            let mut buf = vec![0u8; len];
            let mut prefix = [0u8; 4];
            for i in 0..n {
                recv.read_exact(&mut prefix)
                    .await
                    .with_context(|| format!("reading prefix {i}"))?;
                let l = u32::from_be_bytes(prefix) as usize;
                ensure!(l == len, "message {i} claims {l} bytes, expected {len}");
                recv.read_exact(&mut buf[..l])
                    .await
                    .with_context(|| format!("reading message {i}"))?;
            }
            let done = Instant::now();
            conn.close(0u32.into(), b"done");
            Ok::<_, anyhow::Error>(done)
        })
    };
    let mut message = Vec::with_capacity(4 + len);
    message.extend_from_slice(&(len as u32).to_be_bytes());
    message.extend_from_slice(&random_bytes(len));
    let cpu = process_cpu_s();
    let t0 = Instant::now();
    let conn = client
        .connect(addr, RAW_ALPN)
        .await
        .map_err(|e| anyhow!("raw connect: {e}"))?;
    let (mut send, _recv) = conn.open_bi().await.context("open_bi")?;
    let t1 = Instant::now();
    for i in 0..n {
        send.write_all(&message)
            .await
            .with_context(|| format!("writing message {i}"))?;
    }
    send.finish().context("finish")?;
    let done = tokio::time::timeout(SYNC_DEADLINE, accept)
        .await
        .context("raw transfer timed out")?
        .context("raw receiver task")??;
    let cpu = process_cpu_s() - cpu;
    conn.close(0u32.into(), b"done");
    client.close().await;
    server.close().await;
    Ok((
        done.duration_since(t0).as_secs_f64(),
        done.duration_since(t1).as_secs_f64(),
        cpu,
    ))
}

/// Raw iroh ping-pong: `n` round trips of a `len`-byte message on one bi-stream.
pub(crate) async fn raw_rtt(n: usize, len: usize) -> Result<Vec<Duration>> {
    let server = raw_endpoint(vec![RAW_ALPN.to_vec()]).await?;
    let client = raw_endpoint(Vec::new()).await?;
    let addr = server.addr();
    let echo = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.context("server endpoint closed")?;
            let conn = incoming.await.context("accepting raw connection")?;
            let (mut send, mut recv) = conn.accept_bi().await.context("accept_bi")?;
            let mut buf = vec![0u8; len];
            for _ in 0..n {
                recv.read_exact(&mut buf).await.context("echo read")?;
                send.write_all(&buf).await.context("echo write")?;
            }
            let _ = send.finish();
            conn.closed().await;
            Ok::<_, anyhow::Error>(())
        })
    };
    let conn = client
        .connect(addr, RAW_ALPN)
        .await
        .map_err(|e| anyhow!("raw connect: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.context("open_bi")?;
    let msg = random_bytes(len);
    let mut back = vec![0u8; len];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        send.write_all(&msg).await.context("ping write")?;
        recv.read_exact(&mut back).await.context("pong read")?;
        out.push(t.elapsed());
    }
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(5), echo).await;
    client.close().await;
    server.close().await;
    Ok(out)
}
