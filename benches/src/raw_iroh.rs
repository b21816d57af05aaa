//! The raw iroh baselines: loopback-only endpoints configured like covey's own, carrying the
//! same bytes as the part they are compared to with nothing of covey's around them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use iroh::endpoint::{Connection, PortmapperConfig, RecvStream, SendStream, presets};
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMode};
use tokio::task::JoinHandle;

use crate::harness::{SYNC_DEADLINE, random_bytes};
use crate::sysinfo::process_cpu_s;

/// ALPN of the raw iroh transfer baseline.
const RAW_ALPN: &[u8] = b"covey-bench/raw/0";

/// A loopback-only raw iroh endpoint, configured like covey's own without NAT traversal.
async fn raw_endpoint(alpns: Vec<Vec<u8>>) -> Result<Endpoint> {
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

/// A raw baseline's two loopback endpoints: a server whose task accepts one connection and
/// its first bi-stream and runs the baseline's server side on them, and a client to dial it.
struct RawPair<T> {
    /// The server endpoint.
    server: Endpoint,
    /// The client endpoint.
    client: Endpoint,
    /// The server's address, taken before anything is timed.
    addr: EndpointAddr,
    /// The server side's task: what it returns once it is done.
    served: JoinHandle<Result<T>>,
}

impl<T: Send + 'static> RawPair<T> {
    /// Binds both endpoints and starts the server task, which hands the accepted connection
    /// and bi-stream to `serve`.
    async fn start<F, Fut>(serve: F) -> Result<Self>
    where
        F: FnOnce(Connection, SendStream, RecvStream) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let server = raw_endpoint(vec![RAW_ALPN.to_vec()]).await?;
        let client = raw_endpoint(Vec::new()).await?;
        let addr = server.addr();
        let accepting = server.clone();
        let served = tokio::spawn(async move {
            let incoming = accepting.accept().await.context("server endpoint closed")?;
            let conn = incoming.await.context("accepting raw connection")?;
            let (send, recv) = conn.accept_bi().await.context("accept_bi")?;
            serve(conn, send, recv).await
        });
        Ok(Self {
            server,
            client,
            addr,
            served,
        })
    }

    /// Dials the server from the client and opens the bi-stream.
    async fn connect(&self) -> Result<(Connection, SendStream, RecvStream)> {
        let conn = self
            .client
            .connect(self.addr.clone(), RAW_ALPN)
            .await
            .map_err(|e| anyhow!("raw connect: {e}"))?;
        let (send, recv) = conn.open_bi().await.context("open_bi")?;
        Ok((conn, send, recv))
    }

    /// Closes both endpoints.
    async fn close(self) {
        self.client.close().await;
        self.server.close().await;
    }
}

/// Raw baseline: `n` length-prefixed messages of `len` bytes over one iroh bi-stream.
/// Returns (seconds including connect, seconds of the stream transfer alone, process CPU
/// seconds).
pub(crate) async fn raw_transfer(n: usize, len: usize) -> Result<(f64, f64, f64)> {
    let mut pair = RawPair::start(move |conn, _send, mut recv| async move {
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
        Ok(done)
    })
    .await?;
    let mut message = Vec::with_capacity(4 + len);
    message.extend_from_slice(&(len as u32).to_be_bytes());
    message.extend_from_slice(&random_bytes(len));
    let cpu = process_cpu_s();
    let t0 = Instant::now();
    let (conn, mut send, _recv) = pair.connect().await?;
    let t1 = Instant::now();
    for i in 0..n {
        send.write_all(&message)
            .await
            .with_context(|| format!("writing message {i}"))?;
    }
    send.finish().context("finish")?;
    let done = tokio::time::timeout(SYNC_DEADLINE, &mut pair.served)
        .await
        .context("raw transfer timed out")?
        .context("raw receiver task")??;
    let cpu = process_cpu_s() - cpu;
    conn.close(0u32.into(), b"done");
    pair.close().await;
    Ok((
        done.duration_since(t0).as_secs_f64(),
        done.duration_since(t1).as_secs_f64(),
        cpu,
    ))
}

/// A raw pair whose server echoes `n` messages of `len` bytes on one bi-stream.
async fn echo_pair(n: usize, len: usize) -> Result<RawPair<()>> {
    RawPair::start(move |conn, mut send, mut recv| async move {
        let mut buf = vec![0u8; len];
        for _ in 0..n {
            recv.read_exact(&mut buf).await.context("echo read")?;
            send.write_all(&buf).await.context("echo write")?;
        }
        let _ = send.finish();
        conn.closed().await;
        Ok(())
    })
    .await
}

/// Raw iroh ping-pong: `n` round trips of a `len`-byte message on one bi-stream.
pub(crate) async fn raw_rtt(n: usize, len: usize) -> Result<Vec<Duration>> {
    let mut pair = echo_pair(n, len).await?;
    let (conn, mut send, mut recv) = pair.connect().await?;
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
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut pair.served).await;
    pair.close().await;
    Ok(out)
}

/// Raw iroh, cold: a fresh client endpoint dials a fresh server, opens a bi-stream and makes
/// one round trip of a `len`-byte message. The time from the dial until the echo is read:
/// the least a joiner's first exchange with an inviter it never talked to can cost.
pub(crate) async fn raw_connect_rtt(len: usize) -> Result<Duration> {
    let mut pair = echo_pair(1, len).await?;
    let msg = random_bytes(len);
    let mut back = vec![0u8; len];
    let t = Instant::now();
    let (conn, mut send, mut recv) = pair.connect().await?;
    send.write_all(&msg).await.context("ping write")?;
    recv.read_exact(&mut back).await.context("pong read")?;
    let took = t.elapsed();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut pair.served).await;
    pair.close().await;
    Ok(took)
}
