//! The node id a member keeps in its data directory (`node-id`, like Redis's `nodes.conf`),
//! so a restarted member rejoins as itself and owns the same slots. Kept only when the
//! node persists: without a data directory of its own there is nothing to come back to.
//! It goes through the tier's [`DataDir`], so an in-memory or fault-injecting directory
//! keeps it too.

use anyhow::Context;
use ringkv_cluster::NodeId;
use ringkv_store::data_dir::DataDir;

/// The file's name inside the data directory.
pub const FILE: &str = "node-id";

/// This node's id: the one kept in `dir` when there is one (`true`: a restart), else a new
/// one, written there atomically.
pub fn load_or_create(dir: &dyn DataDir) -> anyhow::Result<(NodeId, bool)> {
    match dir.read(FILE) {
        Ok(bytes) => {
            let id = String::from_utf8_lossy(&bytes)
                .trim()
                .parse::<NodeId>()
                .with_context(|| {
                    format!("{FILE} in the data directory does not hold a node id; remove it to start as a new member")
                })?;
            return Ok((id, true));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).context("reading the node id"),
    }
    let id = NodeId::random();
    dir.write_atomically(FILE, format!("{id}\n").as_bytes())
        .context("keeping the node id in the data directory")?;
    Ok((id, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_store::data_dir::MemoryDir;

    #[test]
    fn the_id_survives_a_restart_and_garbage_is_refused() {
        let dir = MemoryDir::default();
        let (first, restarted) = load_or_create(&dir).unwrap();
        assert!(!restarted);
        let (again, restarted) = load_or_create(&dir).unwrap();
        assert_eq!((again, restarted), (first, true));
        dir.write_atomically(FILE, b"not an id\n").unwrap();
        let error = format!("{:#}", load_or_create(&dir).unwrap_err());
        assert!(error.contains("does not hold a node id"), "{error}");
    }
}
