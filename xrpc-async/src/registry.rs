//! The registry of the services listening on this machine, for `xrpc list`: a directory owned by
//! the user, mode 0700 — `$XDG_RUNTIME_DIR/xrpc/`, or `/tmp/xrpc-<uid>/` without it — holding
//! one small file per shared-memory or Unix listener of that user. A listener writes its file
//! at bind and removes it when dropped; the file of a process that was killed stays until a
//! reader sees that its process is gone ([`Entry::is_alive`]) and prunes it ([`prune`]).
//!
//! A file holds two lines: the service's target (`shm:NAME`, `unix:PATH`) and the pid of the
//! process that listens. Registering is best effort: a listener binds even where the directory
//! cannot be made. Setting `XRPC_NO_REGISTRY` (to anything) in a server's environment turns
//! it off.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory's mode: the owner only.
pub const DIR_MODE: u32 = 0o700;

/// Entries [`entries`] reads at most (a directory of more is cut there).
pub const MAX_ENTRIES: usize = 4096;

/// Bytes of one entry's file read at most.
const MAX_ENTRY_BYTES: u64 = 4096;

/// The registry directory of this user (made by the first listener that registers).
pub fn dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("xrpc"),
        None => PathBuf::from(format!("/tmp/xrpc-{}", rustix::process::getuid().as_raw())),
    }
}

/// One registered service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it listens: `shm:NAME` or `unix:PATH`.
    pub target: String,
    /// The process that listens.
    pub pid: u32,
    /// The entry's file.
    pub file: PathBuf,
}

impl Entry {
    /// Whether the process that registered it still runs.
    pub fn is_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// A listener's entry, removed when dropped.
#[derive(Debug)]
pub struct Registration {
    file: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The file name of a target: its bytes, with anything but `[A-Za-z0-9._-]` as `%XX`, and the
/// pid (two processes may bind the same shared-memory name one after the other).
fn file_name(target: &str, pid: u32) -> String {
    let mut s = String::with_capacity(target.len() + 12);
    for b in target.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{s}@{pid}")
}

/// Registers `target` for this process; `None` if the registry is off or cannot be written.
pub fn register(target: &str) -> Option<Registration> {
    if std::env::var_os("XRPC_NO_REGISTRY").is_some() {
        return None;
    }
    let dir = dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&dir)
        .ok()?;
    // A directory made by someone else, or opened up since: not written to.
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_dir()
        || std::os::unix::fs::MetadataExt::uid(&meta) != uid
        || meta.permissions().mode() & 0o077 != 0
    {
        return None;
    }
    let pid = std::process::id();
    let file = dir.join(file_name(target, pid));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .ok()?;
    f.write_all(format!("{target}\n{pid}\n").as_bytes()).ok()?;
    Some(Registration { file })
}

/// The registered services, sorted by target (unreadable or malformed files are skipped).
pub fn entries() -> std::io::Result<Vec<Entry>> {
    entries_in(&dir())
}

fn entries_in(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for de in rd.take(MAX_ENTRIES).flatten() {
        let file = de.path();
        let Ok(f) = std::fs::File::open(&file) else {
            continue;
        };
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_ENTRY_BYTES), &mut text)
            .is_err()
        {
            continue;
        }
        let mut lines = text.lines();
        let (Some(target), Some(pid)) = (lines.next(), lines.next()) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse() else {
            continue;
        };
        out.push(Entry {
            target: target.to_owned(),
            pid,
            file,
        });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target).then(a.pid.cmp(&b.pid)));
    Ok(out)
}

/// Removes the entry of a process that is gone; returns whether it did.
pub fn prune(entry: &Entry) -> bool {
    !entry.is_alive() && std::fs::remove_file(&entry.file).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_entries_read_back() {
        assert_eq!(
            file_name("unix:/run/a b.sock", 7),
            "unix%3A%2Frun%2Fa%20b.sock@7"
        );
        let r = register("shm:registry-test-entry").expect("the registry is writable here");
        let e = entries().unwrap();
        let mine = e
            .iter()
            .find(|e| e.target == "shm:registry-test-entry")
            .expect("registered");
        assert_eq!(mine.pid, std::process::id());
        assert!(mine.is_alive() && !prune(mine));
        let mode = std::fs::metadata(dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
        drop(r);
        assert!(
            !entries()
                .unwrap()
                .iter()
                .any(|e| e.target == "shm:registry-test-entry")
        );
    }
}
