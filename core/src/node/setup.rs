//! Opening a node: its identity from the key store, and its iroh endpoint.

use std::str::FromStr;

use iroh::endpoint::{PortmapperConfig, QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMode, RelayUrl, SecretKey};
use iroh_tickets::endpoint::EndpointTicket;

use super::SYNC_ALPN;
use super::dht_driver::DHT_ALPN;
use super::types::NodeConfig;
use crate::crypto::Secret32;
use crate::error::{CoveyError, Result};
use crate::group::GroupId;
use crate::keystore::KeyStore;

const DEVICE_KEY: &str = "device";

pub(super) fn parse_ticket(ticket: &str) -> Result<EndpointAddr> {
    let ticket = EndpointTicket::from_str(ticket.trim())
        .map_err(|e| CoveyError::invalid(format!("malformed address ticket: {e}")))?;
    Ok(ticket.endpoint_addr().clone())
}

pub(super) fn load_or_create_identity(keys: &dyn KeyStore) -> Result<SecretKey> {
    match keys.load(DEVICE_KEY)? {
        Some(bytes) => {
            let secret = Secret32::from_slice(&bytes).ok_or_else(|| {
                CoveyError::crypto("stored device key is not 32 bytes; refusing to replace it")
            })?;
            Ok(SecretKey::from_bytes(secret.expose()))
        }
        None => {
            let secret = Secret32::random();
            keys.store(DEVICE_KEY, secret.expose())?;
            Ok(SecretKey::from_bytes(secret.expose()))
        }
    }
}

pub(super) fn group_key_name(id: &GroupId) -> String {
    format!("group-{id}")
}

pub(super) async fn bind_endpoint(config: &NodeConfig, secret: SecretKey) -> Result<Endpoint> {
    let mut builder = if config.nat_traversal {
        Endpoint::builder(presets::N0)
    } else {
        Endpoint::builder(presets::Minimal)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(NetReportConfig::minimal())
    };
    // A session uses one bidirectional stream; a peer may not open more than a couple at
    // once (each would pin a receive window of our memory) nor any unidirectional one.
    let transport = QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(2))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .build();
    builder = builder
        .secret_key(secret)
        .alpns(vec![
            SYNC_ALPN.to_vec(),
            DHT_ALPN.to_vec(),
            crate::group::invite::INVITE_ALPN.to_vec(),
        ])
        .transport_config(transport);
    builder = if config.relay_urls.is_empty() {
        builder.relay_mode(RelayMode::Disabled)
    } else {
        let urls = config
            .relay_urls
            .iter()
            .map(|u| {
                RelayUrl::from_str(u)
                    .map_err(|e| CoveyError::invalid(format!("bad relay url {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        builder.relay_mode(RelayMode::custom(urls))
    };
    if let Some(addr) = config.bind_addr {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| CoveyError::invalid(format!("bad bind address {addr}: {e}")))?;
    }
    builder
        .bind()
        .await
        .map_err(|e| CoveyError::network(format!("cannot bind endpoint: {e}")))
}
