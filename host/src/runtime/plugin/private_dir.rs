//! A folder that only the user running warden can change, held open while it is used.
//!
//! What the compiled-plugin cache holds is run as native code, so its folder and files are
//! trusted only when this user (the effective uid) owns them and no other user may write
//! them. The folder is checked through the descriptor it was opened with, and every file is
//! then opened, created and renamed relative to that descriptor: a folder swapped in under
//! the same path after the check, by whoever can write a folder above it, is never read from
//! or written to. That is why the folders above need no check of their own.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Write permission for the group or for others.
const WRITABLE_BY_OTHERS: u32 = 0o022;

pub(crate) struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// Opens the folder at `path`, first creating it (and missing folders above it) with
    /// mode 0700. Refused unless this user owns it and no one else may write it.
    pub(crate) fn open_or_create(path: &Path) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| format!("cannot create the cache folder {}: {e}", path.display()))?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open the cache folder {}: {e}", path.display()))?;
        check_trusted(&fd, FileType::Directory, "the cache folder", path)?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The contents of the file `name`: `Ok(None)` when there is none, `Err` when there is
    /// one that cannot be trusted (see [`open`](Self::open)) or read.
    pub(crate) fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(file) = self.open(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(|e| {
            format!(
                "cannot read the cache entry {}: {e}",
                self.path.join(name).display()
            )
        })?;
        Ok(Some(bytes))
    }

    /// The file `name`, opened for reading: `Ok(None)` when there is none, `Err` when there
    /// is one that cannot be trusted (a link, not a plain file, another user's, writable by
    /// others) or opened.
    pub(crate) fn open(&self, name: &str) -> Result<Option<File>, String> {
        let path = self.path.join(name);
        // NONBLOCK: a FIFO put in place of an entry must not hang the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(format!(
                    "the cache entry {} is a symbolic link; not loaded",
                    path.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot open the cache entry {}: {e}",
                    path.display()
                ));
            }
        };
        check_trusted(&fd, FileType::RegularFile, "the cache entry", &path)?;
        Ok(Some(File::from(fd)))
    }

    /// Puts `bytes` in the folder as `name`, whole or not at all: they are written to a new
    /// file under a random name (created exclusively, mode 0600, so nothing already there
    /// is written through) and renamed over `name`.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let temporary = format!(".{name}.{}.tmp", random_suffix()?);
        let fd = rustix::fs::openat(
            &self.fd,
            &temporary,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| {
            format!(
                "cannot create {}: {e}",
                self.path.join(&temporary).display()
            )
        })?;
        let written = File::from(fd)
            .write_all(bytes)
            .map_err(|e| format!("cannot write {}: {e}", self.path.join(&temporary).display()))
            .and_then(|()| {
                rustix::fs::renameat(&self.fd, &temporary, &self.fd, name)
                    .map_err(|e| format!("cannot write {}: {e}", self.path.join(name).display()))
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &temporary, AtFlags::empty());
        }
        written
    }

    /// The plain files in the folder (no links, nothing below it), with their size and
    /// modification time, in no order.
    pub(crate) fn files(&self) -> Result<Vec<FileEntry>, String> {
        let listing =
            |e: Errno| format!("cannot list the cache folder {}: {e}", self.path.display());
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(listing)?;
        let mut files = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(listing)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            // Gone meanwhile (another warden pruning) or unreadable: not ours to count.
            let Ok(stat) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if FileType::from_raw_mode(stat.st_mode as _) != FileType::RegularFile {
                continue;
            }
            files.push(FileEntry {
                name: name.to_owned(),
                size: u64::try_from(stat.st_size).unwrap_or(0),
                modified: std::time::UNIX_EPOCH
                    + std::time::Duration::new(
                        u64::try_from(stat.st_mtime).unwrap_or(0),
                        u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
                    ),
            });
        }
        Ok(files)
    }

    /// Removes the file `name`; one already gone is not an error.
    pub(crate) fn remove(&self, name: &str) -> Result<(), String> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(format!(
                "cannot remove {}: {e}",
                self.path.join(name).display()
            )),
        }
    }

    /// Sets the modification time of the file `name` to now (the link itself, were it one).
    pub(crate) fn touch(&self, name: &str) -> Result<(), String> {
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        rustix::fs::utimensat(&self.fd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| format!("cannot touch {}: {e}", self.path.join(name).display()))
    }
}

/// A plain file of a [`PrivateDir`].
pub(crate) struct FileEntry {
    pub name: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// Refuses what is not of `kind`, is owned by another user, or may be written by others.
fn check_trusted(fd: impl AsFd, kind: FileType, what: &str, path: &Path) -> Result<(), String> {
    let stat = rustix::fs::fstat(fd)
        .map_err(|e| format!("cannot inspect {what} {}: {e}", path.display()))?;
    let mode = stat.st_mode as u32;
    if FileType::from_raw_mode(mode as _) != kind {
        return Err(format!(
            "{what} {} is not a {}; not used",
            path.display(),
            if kind == FileType::Directory {
                "folder"
            } else {
                "plain file"
            }
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if stat.st_uid != me {
        return Err(format!(
            "{what} {} is owned by uid {}, not by this user (uid {me}); not used",
            path.display(),
            stat.st_uid
        ));
    }
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "{what} {} can be written by other users (mode {:04o}); not used",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

fn random_suffix() -> Result<String, String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random numbers for a file name: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
