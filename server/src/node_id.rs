//! The node id a member keeps in its data directory (`node-id`, like Redis's `nodes.conf`),
//! so a restarted member rejoins as itself and owns the same slots. Kept only when the
//! node persists: without a data directory of its own there is nothing to come back to,
//! and nodes sharing a working directory must not share an id.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ringkv_cluster::NodeId;

/// The file's name inside `--dir`.
pub const FILE: &str = "node-id";

/// This node's id: the one kept in `dir` when there is one (`true`: a restart), else a new
/// one, kept there (written to a temporary file, synced, renamed, the directory synced).
pub fn load_or_create(dir: &Path) -> anyhow::Result<(NodeId, bool)> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().parse::<NodeId>().with_context(|| {
                format!(
                    "{} does not hold a node id; remove it to start as a new member",
                    path.display()
                )
            })?;
            return Ok((id, true));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let id = NodeId::random();
    let temporary = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok((id, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_survives_a_restart_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, restarted) = load_or_create(dir.path()).unwrap();
        assert!(!restarted);
        let (again, restarted) = load_or_create(dir.path()).unwrap();
        assert_eq!((again, restarted), (first, true));
        std::fs::write(dir.path().join(FILE), "not an id\n").unwrap();
        let error = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(error.contains("does not hold a node id"), "{error}");
    }
}
