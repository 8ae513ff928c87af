//! The pages a large plugin's hooks write, copied before the event instead of during it.
//!
//! A plugin compiled for the copy-on-write engine (Python's interpreter heap, 12–14 MiB;
//! `engine.rs`) has its memory mapped from the compiled image, so the first write to each page
//! is a fault that copies it: about 265 in a trivial Python hook, at about 7 µs each on this
//! machine, 1.9 ms of the hook's 2.7 ms (BENCHMARKS.md, "The faults of a Python hook").
//! wasmtime keeps a reused slot's written pages only as far as its reset's page scan reaches
//! (it stops at 32 runs of pages), and a Python heap's scattered writes pass that within a few
//! MiB: every page after it goes back to the kernel and faults again at the next event.
//!
//! So a flow's first events record which pages of its memory they wrote (the kernel's
//! `/proc/self/pagemap`: present, and no longer the image's page), and each instance made
//! ahead for a later event has those pages written ahead (`MADV_POPULATE_WRITE`) while it
//! waits. Nothing the plugin can see changes: the pages hold what the image holds, and only the
//! moment the copy is paid for moves. An instance holds the pages its hook would have written
//! anyway; the copies are made in the background (`Warden::prepare_next`). Where an instance's
//! memory is comes from lifting the answer of `implemented` (`lift::Implemented`), which an
//! instance made ahead for such a flow is asked once; the hook's own pages need no view of it.
//!
//! Linux only; elsewhere, or on a kernel without `MADV_POPULATE_WRITE` (before 5.14), the
//! hooks fault as before.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::Unpoisoned;

/// Where an instance's linear memory is in the host's address space, as a lift saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub base: usize,
    pub len: usize,
}

/// Events of a flow whose written pages are recorded; their union is what later instances
/// have written ahead.
const LEARN_EVENTS: u32 = 4;

const PAGE: usize = 4096;

/// One flow's record of the pages its hooks write.
pub(crate) struct HotPages {
    /// Indexes of the pages written, counted from the memory's start; sorted, no repeats.
    pages: Mutex<Vec<u32>>,
    /// The same pages as runs (first, count), made once per event learned from and shared
    /// by every instance made ahead after it.
    runs: Mutex<Arc<Vec<(u32, u32)>>>,
    learned: AtomicU32,
    /// How far into a memory to look: the flow's memory limit.
    extent: usize,
    /// Set once the kernel refuses the pagemap or the populating, so nothing is tried again.
    unsupported: AtomicBool,
}

impl HotPages {
    pub(crate) fn new(memory_limit_bytes: usize) -> Self {
        Self {
            pages: Mutex::new(Vec::new()),
            runs: Mutex::new(Arc::new(Vec::new())),
            learned: AtomicU32::new(0),
            extent: memory_limit_bytes,
            unsupported: AtomicBool::new(!cfg!(target_os = "linux")),
        }
    }

    /// Whether the event about to end should be learned from.
    pub(crate) fn learning(&self) -> bool {
        !self.unsupported.load(Ordering::Relaxed)
            && self.learned.load(Ordering::Relaxed) < LEARN_EVENTS
    }

    /// Adds the pages written in `memory`, an instance whose event has ended (its store not
    /// yet freed) and whose memories grew to at most `grown_to` bytes, to the flow's record.
    pub(crate) fn learn(&self, memory: MemoryRange, grown_to: usize) {
        // Only as far as the memory reached: a flow may allow far more than it uses.
        let reached = memory.len.max(grown_to).min(self.extent);
        let Some(written) = written_pages(memory.base, reached) else {
            self.unsupported.store(true, Ordering::Relaxed);
            return;
        };
        let mut pages = self.pages.lock().unpoisoned();
        pages.extend(written);
        pages.sort_unstable();
        pages.dedup();
        *self.runs.lock().unpoisoned() = Arc::new(runs(&pages));
        self.learned.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes ahead, in `memory` (an instance made ahead, not running), the pages the flow's
    /// events were seen to write.
    pub(crate) fn populate(&self, memory: MemoryRange) {
        if self.unsupported.load(Ordering::Relaxed) {
            return;
        }
        let runs = self.runs.lock().unpoisoned().clone();
        for &(first, count) in runs.iter() {
            let start = first as usize * PAGE;
            let len = count as usize * PAGE;
            if start + len > self.extent {
                break;
            }
            if !populate_write(memory.base + start, len) {
                // A run past the memory's current size (its pages are not accessible yet)
                // is refused and skipped; a kernel without the advice refuses the first.
                if !populate_supported() {
                    self.unsupported.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn pages(&self) -> Vec<u32> {
        self.pages.lock().unpoisoned().clone()
    }
}

/// Consecutive pages as (first, count).
fn runs(pages: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &page in pages {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == page => *count += 1,
            _ => runs.push((page, 1)),
        }
    }
    runs
}

/// The pages of `[base, base + extent)` this process has written since they were mapped:
/// present and private (pagemap bit 63 set, bit 61 "file page or shared" clear). Readable
/// without privileges (only the frame numbers are hidden).
#[cfg(target_os = "linux")]
fn written_pages(base: usize, extent: usize) -> Option<Vec<u32>> {
    use std::os::unix::fs::FileExt;
    use std::sync::OnceLock;
    static PAGEMAP: OnceLock<Option<std::fs::File>> = OnceLock::new();
    let pagemap = PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()?;
    let count = extent / PAGE;
    let mut entries = vec![0u8; count * 8];
    pagemap
        .read_exact_at(&mut entries, (base / PAGE * 8) as u64)
        .ok()?;
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    Some(
        entries
            .chunks_exact(8)
            .enumerate()
            .filter(|(_, entry)| {
                let entry = u64::from_le_bytes((*entry).try_into().expect("8 bytes"));
                entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0
            })
            .map(|(page, _)| page as u32)
            .collect(),
    )
}

#[cfg(not(target_os = "linux"))]
fn written_pages(_base: usize, _extent: usize) -> Option<Vec<u32>> {
    None
}

#[cfg(target_os = "linux")]
fn populate_write(address: usize, len: usize) -> bool {
    // SAFETY: the range is inside one instance's memory slot (`extent` is at most the
    // memory's limit, itself within the slot), the instance is not running, and the advice
    // only faults the pages in writable, as a write of each page's own contents would.
    unsafe { libc::madvise(address as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_address: usize, _len: usize) -> bool {
    false
}

/// Whether the kernel knows `MADV_POPULATE_WRITE` (an unknown advice is `EINVAL`).
fn populate_supported() -> bool {
    std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A private mapping of a file, as wasmtime maps a memory image.
    fn mapped_file(pages: usize) -> (usize, std::fs::File) {
        let mut file = tempfile::tempfile().expect("a temporary file");
        std::io::Write::write_all(&mut file, &vec![7u8; pages * PAGE]).expect("write it");
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        (base as usize, file)
    }

    #[test]
    fn the_pages_written_are_learned_and_written_ahead_in_another_memory() {
        let (first, _f1) = mapped_file(16);
        let (second, _f2) = mapped_file(16);
        // Read every page (present, still the file's), write pages 3, 4 and 9.
        for page in 0..16 {
            let _ = unsafe { std::ptr::read_volatile((first + page * PAGE) as *const u8) };
        }
        for page in [3, 4, 9] {
            unsafe { std::ptr::write_volatile((first + page * PAGE + 5) as *mut u8, 1) };
        }
        let hot = HotPages::new(16 * PAGE);
        assert!(hot.learning());
        hot.learn(
            MemoryRange {
                base: first,
                len: 16 * PAGE,
            },
            0,
        );
        assert_eq!(hot.pages(), vec![3, 4, 9]);
        assert_eq!(runs(&hot.pages()), vec![(3, 2), (9, 1)]);

        assert_eq!(written_pages(second, 16 * PAGE).unwrap(), Vec::<u32>::new());
        hot.populate(MemoryRange {
            base: second,
            len: 16 * PAGE,
        });
        assert_eq!(written_pages(second, 16 * PAGE).unwrap(), vec![3, 4, 9]);
        // Written ahead, not changed: the file's bytes are still there.
        for page in 0..16 {
            let byte = unsafe { std::ptr::read_volatile((second + page * PAGE + 5) as *const u8) };
            assert_eq!(byte, 7, "page {page}");
        }
        // Only as far as the memory reached: its first 4 pages, so page 9 is not seen again.
        let other = HotPages::new(16 * PAGE);
        other.learn(
            MemoryRange {
                base: first,
                len: 2 * PAGE,
            },
            4 * PAGE,
        );
        assert_eq!(other.pages(), vec![3]);
        for _ in 1..LEARN_EVENTS {
            hot.learn(
                MemoryRange {
                    base: first,
                    len: 16 * PAGE,
                },
                0,
            );
        }
        assert!(!hot.learning(), "learns from its first events only");
        unsafe {
            libc::munmap(first as *mut libc::c_void, 16 * PAGE);
            libc::munmap(second as *mut libc::c_void, 16 * PAGE);
        }
    }
}
