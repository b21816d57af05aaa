//! Loopback-only covey nodes joined to the benchmark group: [`open_loopback_node`] for a node
//! on a data dir someone else owns (the catch-up children), [`BenchNode`] for one in its own
//! temp dir.

use std::path::Path;

use anyhow::{Context, Result};
use covey_core::{GroupId, Node, NodeConfig};
use tempfile::TempDir;

use crate::harness::{GROUP_NAME, PASSPHRASE, temp_dir};

/// Opens a loopback node on `dir` and joins the benchmark group (Argon2id's 64 MiB are spent
/// here). `role` names the node in errors.
pub(crate) async fn open_loopback_node(dir: &Path, role: &str) -> Result<(Node, GroupId)> {
    let node = Node::open(NodeConfig::loopback(dir))
        .await
        .with_context(|| format!("opening the {role} node"))?;
    let group = node
        .join_passphrase(PASSPHRASE, GROUP_NAME)
        .await
        .with_context(|| format!("{role} joining the benchmark group"))?
        .group_id;
    Ok((node, group))
}

/// A loopback node in its own temp dir, joined to the benchmark group.
pub(crate) struct BenchNode {
    /// The node.
    pub(crate) node: Node,
    /// The benchmark group.
    pub(crate) group: GroupId,
    /// Keeps the data dir alive as long as the node.
    _dir: TempDir,
}

impl BenchNode {
    /// Opens a loopback node named `tag` and joins the benchmark group (Argon2id runs here).
    pub(crate) async fn open(tag: &str) -> Result<Self> {
        let dir = temp_dir(tag)?;
        let (node, group) = open_loopback_node(dir.path(), tag).await?;
        Ok(Self {
            node,
            group,
            _dir: dir,
        })
    }

    /// Shuts the node down.
    pub(crate) async fn close(self) -> Result<()> {
        self.node.shutdown().await.context("shutting a node down")
    }
}
