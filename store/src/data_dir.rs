//! The files of the persistence tier (WAL segments, the manifest) behind a narrow trait,
//! with a real directory, an in-memory one and a fault-injecting wrapper, so the log
//! thread, the checkpoint and recovery are tested against full disks and failing fsyncs
//! without a real disk failing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use parking_lot::Mutex;

/// One open file: positioned writes, a data sync, reads for recovery.
pub trait DataFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// `fdatasync`: what was written is on the device.
    fn sync_data(&self) -> io::Result<()>;
    /// Shortens the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// A flat directory of named files.
pub trait DataDir: Send + Sync + std::fmt::Debug {
    /// The names of the files in it.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens a file for writing, creating it (empty) when missing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn DataFile>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Renames a file, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes renames and new files durable (an fsync of the directory).
    fn sync(&self) -> io::Result<()>;
    /// Replaces `name` atomically with `data`: temp file, fdatasync, rename, directory
    /// fsync. A crash leaves the old content or the new, never a mix.
    fn write_atomically(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let temp = format!("{name}.tmp");
        let file = self.open(&temp)?;
        file.truncate(0)?;
        file.write_at(0, data)?;
        file.sync_data()?;
        drop(file);
        self.rename(&temp, name)?;
        self.sync()
    }
}

/// A real directory.
#[derive(Debug)]
pub struct DiskDir {
    root: PathBuf,
}

impl DiskDir {
    /// Opens (creating) the directory.
    pub fn open(root: &Path) -> io::Result<DiskDir> {
        std::fs::create_dir_all(root)?;
        Ok(DiskDir {
            root: root.to_path_buf(),
        })
    }
}

#[derive(Debug)]
struct DiskFile(File);

impl DataFile for DiskFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl DataDir for DiskDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn DataFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.root.join(name))?;
        Ok(Arc::new(DiskFile(file)))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.root.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.root.join(from), self.root.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.root.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

type Files = Arc<Mutex<BTreeMap<String, Arc<Mutex<Vec<u8>>>>>>;

/// A directory in memory (tests; an embedded cache that only needs the log's shape).
#[derive(Debug, Default, Clone)]
pub struct MemoryDir {
    files: Files,
}

#[derive(Debug)]
struct MemoryFile(Arc<Mutex<Vec<u8>>>);

impl DataFile for MemoryFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.0.lock();
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.lock().truncate(len as usize);
        Ok(())
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl DataDir for MemoryDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.lock().keys().cloned().collect())
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn DataFile>> {
        let file = self
            .files
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone();
        Ok(Arc::new(MemoryFile(file)))
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let files = self.files.lock();
        let file = files.get(name).ok_or_else(|| not_found(name))?;
        Ok(file.lock().clone())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.files.lock();
        let file = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_string(), file);
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.files
            .lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Wraps a directory and fails its writes or syncs on command, as a full or broken disk
/// would.
#[derive(Debug)]
pub struct FaultyDir<D> {
    inner: D,
    faults: Arc<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    writes: AtomicBool,
    syncs: AtomicBool,
}

impl Faults {
    fn write(&self) -> io::Result<()> {
        if self.writes.load(Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device (injected)",
            ));
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        if self.syncs.load(Relaxed) {
            return Err(io::Error::other("fsync failed (injected)"));
        }
        Ok(())
    }
}

impl<D: DataDir> FaultyDir<D> {
    /// A healthy wrapper around `inner`.
    pub fn new(inner: D) -> Self {
        FaultyDir {
            inner,
            faults: Arc::default(),
        }
    }

    /// Makes every write fail (`true`) or succeed again (`false`).
    pub fn fail_writes(&self, fail: bool) {
        self.faults.writes.store(fail, Relaxed);
    }

    /// Makes every sync fail (`true`) or succeed again (`false`).
    pub fn fail_syncs(&self, fail: bool) {
        self.faults.syncs.store(fail, Relaxed);
    }

    /// The wrapped directory.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn DataFile>,
    faults: Arc<Faults>,
}

impl DataFile for FaultyFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.write()?;
        self.inner.write_at(offset, data)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.sync()?;
        self.inner.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.faults.write()?;
        self.inner.truncate(len)
    }
}

impl<D: DataDir> DataDir for FaultyDir<D> {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn DataFile>> {
        Ok(Arc::new(FaultyFile {
            inner: self.inner.open(name)?,
            faults: self.faults.clone(),
        }))
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.faults.write()?;
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn sync(&self) -> io::Result<()> {
        self.faults.sync()?;
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(dir: &dyn DataDir) {
        let file = dir.open("a").unwrap();
        file.write_at(0, b"hello").unwrap();
        file.write_at(3, b"LO!").unwrap();
        file.sync_data().unwrap();
        assert_eq!(dir.read("a").unwrap(), b"helLO!");
        dir.write_atomically("m", b"one").unwrap();
        dir.write_atomically("m", b"two").unwrap();
        assert_eq!(dir.read("m").unwrap(), b"two");
        dir.rename("a", "b").unwrap();
        assert_eq!(dir.list().unwrap(), vec!["b".to_string(), "m".to_string()]);
        dir.remove("b").unwrap();
        assert!(dir.read("b").is_err());
    }

    #[test]
    fn disk_and_memory_directories_behave_alike() {
        let temp = tempfile::tempdir().unwrap();
        exercise(&DiskDir::open(temp.path()).unwrap());
        exercise(&MemoryDir::default());
    }

    #[test]
    fn injected_faults_fail_writes_and_syncs_until_lifted() {
        let dir = FaultyDir::new(MemoryDir::default());
        let file = dir.open("a").unwrap();
        dir.fail_writes(true);
        assert_eq!(
            file.write_at(0, b"x").unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert!(dir.write_atomically("m", b"x").is_err());
        dir.fail_writes(false);
        dir.fail_syncs(true);
        file.write_at(0, b"x").unwrap();
        assert!(file.sync_data().is_err());
        dir.fail_syncs(false);
        file.sync_data().unwrap();
        assert_eq!(dir.inner().read("a").unwrap(), b"x");
    }
}
