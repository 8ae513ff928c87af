//! Whether anything was committed to the database since a moment, answered without a
//! transaction.
//!
//! Every connection to a WAL database shares SQLite's WAL index (the `-shm` file, mapped
//! in memory), and its header changes with every commit, from any process (format:
//! <https://sqlite.org/walformat.html>, "The WAL-Index Header"). A header equal to one seen
//! earlier means nothing was committed in between: a memory read, where a read transaction
//! takes file locks (three system calls) and runs SQLite's pager.
//!
//! The mapping is SQLite's own, asked for through the VFS (`xShmMap`): opening the file
//! again here would be unsafe, because closing any descriptor of a file drops every POSIX
//! lock the process holds on it, SQLite's included.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use rusqlite::{Connection, ffi};

/// Both copies of the header, as SQLite keeps them at the start of the WAL index.
const HEADER_BYTES: usize = 48;
/// The header's format version (`iVersion`) this reading knows.
const WAL_INDEX_VERSION: u32 = 3_007_000;
/// The size of the WAL index's first region, the one holding the header.
const REGION_BYTES: c_int = 32 * 1024;

/// The header at one moment; equal marks mean no commit in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark([u8; HEADER_BYTES]);

impl Mark {
    /// `iChange`: SQLite adds one each time it writes the header (each commit).
    pub(crate) fn changes(&self) -> u32 {
        u32::from_ne_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }
}

/// SQLite's mapping of the WAL index of one connection's database.
pub(crate) struct WalIndex {
    header: NonNull<u8>,
}

// SAFETY: the mapping is only read, with volatile reads, and SQLite keeps it in place until
// the connection it came from closes; the owner keeps that connection open for as long as
// it keeps this.
unsafe impl Send for WalIndex {}
unsafe impl Sync for WalIndex {}

impl WalIndex {
    /// The WAL index `conn` maps, once it has read in WAL mode; `None` for any other
    /// database (in memory, another journal mode, a VFS without shared memory).
    ///
    /// # Safety
    /// The result must not be used after `conn` is closed.
    pub(crate) unsafe fn of(conn: &Connection) -> Option<Self> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: `conn.handle()` is a live connection; the file control writes the main
        // database's file object, which lives as long as the connection.
        let found = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&raw mut file).cast::<c_void>(),
            )
        };
        if found != ffi::SQLITE_OK || file.is_null() {
            return None;
        }
        // SAFETY: `file` is the open main-database file of `conn`.
        let methods = unsafe { (*file).pMethods };
        if methods.is_null() {
            return None;
        }
        // SAFETY: `methods` belongs to an open file; `xShmMap` exists from version 2 on.
        let shm_map = unsafe {
            if (*methods).iVersion < 2 {
                return None;
            }
            (*methods).xShmMap?
        };
        let mut region: *mut c_void = std::ptr::null_mut();
        // SAFETY: asks for region 0 without creating it (`bExtend` 0): it exists once the
        // connection has read the database in WAL mode, and stays mapped until it closes.
        let mapped = unsafe { shm_map(file, 0, REGION_BYTES, 0, &raw mut region) };
        if mapped != ffi::SQLITE_OK {
            return None;
        }
        let index = WalIndex {
            header: NonNull::new(region.cast::<u8>())?,
        };
        index.mark().map(|_| index)
    }

    /// The header now; `None` while a writer is changing it (or if it is not one this
    /// reading knows), which callers treat as "changed".
    pub(crate) fn mark(&self) -> Option<Mark> {
        let at = |offset: usize| {
            // SAFETY: region 0 is at least `REGION_BYTES` long and mapped while `self` may be
            // used; the bytes may change under us, hence volatile reads of plain bytes.
            unsafe {
                std::ptr::read_volatile(
                    self.header
                        .as_ptr()
                        .add(offset)
                        .cast::<[u8; HEADER_BYTES]>(),
                )
            }
        };
        // SQLite writes the second copy, then the first: read in the other order, two equal
        // copies are one complete header (SQLite's own readers check the same way).
        let first = at(0);
        fence(Ordering::Acquire);
        let second = at(HEADER_BYTES);
        let version = u32::from_ne_bytes([first[0], first[1], first[2], first[3]]);
        let initialised = first[12] == 1;
        (first == second && initialised && version == WAL_INDEX_VERSION).then_some(Mark(first))
    }
}
