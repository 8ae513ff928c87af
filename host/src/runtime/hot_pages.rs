//! The pages a large plugin's hooks write, copied before the event instead of during it, and
//! those they only read, mapped before it.
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
//! waits. The pages they only read are recorded too (present, still the image's) and mapped
//! ahead (`MADV_POPULATE_READ`): a fresh slot has none of the image mapped, so each read of
//! a page not yet seen is a fault as well (BENCHMARKS.md, "The cached start, and the pages a
//! Python hook reads"). Nothing the plugin can see changes: the pages hold what the image
//! holds, and only the moment the fault is paid for moves. An instance holds the pages its
//! hook would have touched anyway; the work is done in the background
//! (`Warden::prepare_next`). Where an instance's memory is comes from lifting the answer of
//! `implemented` (`lift::Implemented`), which an instance made ahead for such a flow is asked
//! once; the hook's own pages need no view of it.
//!
//! Linux only; elsewhere, or on a kernel without `MADV_POPULATE_*` (before 5.14), the
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

/// Gaps between pages only read that are mapped ahead with them, so that a Python hook's
/// ~1,800 scattered pages take a few dozen calls, not hundreds: mapping a page of the image
/// copies nothing, while a write ahead copies a page (written pages are not merged).
const READ_GAP_PAGES: u32 = 16;

/// The most pages a flow's instances made ahead have written, and mapped, ahead: a Python
/// hook writes about 265 and reads about 1,800. Past either, the flow's events are not
/// worked ahead at all: the work is the plugin's to size (a memory it writes whole is copied
/// whole for every instance), done outside its deadline and its share of the wasm pool.
const MAX_WRITTEN_PAGES: usize = 2048;
const MAX_READ_PAGES: usize = 8192;

/// One flow's record of the pages its hooks write, and of those they only read.
pub(crate) struct HotPages {
    /// Indexes of the pages written, counted from the memory's start; sorted, no repeats.
    pages: Mutex<Vec<u32>>,
    /// Indexes of the image's pages read and never written in the events learned from.
    read: Mutex<Vec<u32>>,
    /// Both as runs (first, count), made once per event learned from and shared by every
    /// instance made ahead after it.
    runs: Mutex<Arc<Runs>>,
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
            read: Mutex::new(Vec::new()),
            runs: Mutex::new(Arc::new(Runs::default())),
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
        let Some(touched) = touched_pages(memory.base, reached) else {
            self.unsupported.store(true, Ordering::Relaxed);
            return;
        };
        let mut pages = self.pages.lock().unpoisoned();
        pages.extend(touched.written);
        pages.sort_unstable();
        pages.dedup();
        let mut read = self.read.lock().unpoisoned();
        read.extend(touched.read);
        read.sort_unstable();
        read.dedup();
        // A page written in any event is written ahead, not only mapped.
        read.retain(|page| pages.binary_search(page).is_err());
        if pages.len() > MAX_WRITTEN_PAGES || read.len() > MAX_READ_PAGES {
            self.unsupported.store(true, Ordering::Relaxed);
            *self.runs.lock().unpoisoned() = Arc::new(Runs::default());
            return;
        }
        *self.runs.lock().unpoisoned() = Arc::new(Runs {
            written: runs(&pages, 0),
            read: runs(&read, READ_GAP_PAGES),
        });
        self.learned.fetch_add(1, Ordering::Relaxed);
    }

    /// In `memory` (an instance made ahead, not running), maps ahead the image's pages the
    /// flow's events were seen to read, and writes ahead those they were seen to write.
    pub(crate) fn populate(&self, memory: MemoryRange) {
        if self.unsupported.load(Ordering::Relaxed) {
            return;
        }
        let runs = self.runs.lock().unpoisoned().clone();
        for (runs, advice) in [
            (&runs.read, Advice::PopulateRead),
            (&runs.written, Advice::PopulateWrite),
        ] {
            for &(first, count) in runs.iter() {
                let start = first as usize * PAGE;
                let len = count as usize * PAGE;
                if start + len > self.extent {
                    break;
                }
                if !populate(memory.base + start, len, advice) {
                    // A run past the memory's current size (its pages are not accessible
                    // yet) is refused and skipped; a kernel without the advice refuses the
                    // first.
                    if !populate_supported() {
                        self.unsupported.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn pages(&self) -> Vec<u32> {
        self.pages.lock().unpoisoned().clone()
    }

    #[cfg(test)]
    pub(crate) fn read_pages(&self) -> Vec<u32> {
        self.read.lock().unpoisoned().clone()
    }
}

/// A flow's learned pages as runs.
#[derive(Default)]
struct Runs {
    written: Vec<(u32, u32)>,
    read: Vec<(u32, u32)>,
}

/// The pages of one memory an event touched.
struct Touched {
    /// Written: present and private.
    written: Vec<u32>,
    /// Read only: present and still the image's.
    read: Vec<u32>,
}

#[derive(Clone, Copy)]
enum Advice {
    PopulateRead,
    PopulateWrite,
}

/// Pages as runs (first, count), a run taking in gaps of up to `gap` pages.
fn runs(pages: &[u32], gap: u32) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &page in pages {
        match runs.last_mut() {
            Some((first, count)) if page <= *first + *count + gap => *count = page - *first + 1,
            _ => runs.push((page, 1)),
        }
    }
    runs
}

/// The pages of `[base, base + extent)` this process has touched since they were mapped:
/// written ones are present and private (pagemap bit 63 set, bit 61 "file page or shared"
/// clear); read ones are present and still the file's (both set). Readable without
/// privileges (only the frame numbers are hidden).
#[cfg(target_os = "linux")]
fn touched_pages(base: usize, extent: usize) -> Option<Touched> {
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
    let mut touched = Touched {
        written: Vec::new(),
        read: Vec::new(),
    };
    for (page, entry) in entries.chunks_exact(8).enumerate() {
        let entry = u64::from_le_bytes(entry.try_into().expect("8 bytes"));
        if entry & PRESENT == 0 {
            continue;
        }
        if entry & FILE_OR_SHARED == 0 {
            touched.written.push(page as u32);
        } else {
            touched.read.push(page as u32);
        }
    }
    Some(touched)
}

#[cfg(not(target_os = "linux"))]
fn touched_pages(_base: usize, _extent: usize) -> Option<Touched> {
    None
}

#[cfg(target_os = "linux")]
fn populate(address: usize, len: usize, advice: Advice) -> bool {
    let advice = match advice {
        Advice::PopulateRead => libc::MADV_POPULATE_READ,
        Advice::PopulateWrite => libc::MADV_POPULATE_WRITE,
    };
    // SAFETY: the range is inside one instance's memory slot (`extent` is at most the
    // memory's limit, itself within the slot), the instance is not running, and the advice
    // only faults the pages in (readable, or writable as a write of each page's own contents
    // would), changing no byte.
    unsafe { libc::madvise(address as *mut libc::c_void, len, advice) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn populate(_address: usize, _len: usize, _advice: Advice) -> bool {
    false
}

/// Whether the kernel knows `MADV_POPULATE_*` (an unknown advice is `EINVAL`).
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
        assert_eq!(runs(&hot.pages(), 0), vec![(3, 2), (9, 1)]);
        assert_eq!(runs(&[1, 2, 5, 30], 3), vec![(1, 5), (30, 1)]);
        let only_read: Vec<u32> = (0..16).filter(|p| ![3, 4, 9].contains(p)).collect();
        assert_eq!(hot.read_pages(), only_read);

        let untouched = touched_pages(second, 16 * PAGE).unwrap();
        assert!(untouched.written.is_empty() && untouched.read.is_empty());
        hot.populate(MemoryRange {
            base: second,
            len: 16 * PAGE,
        });
        let populated = touched_pages(second, 16 * PAGE).unwrap();
        assert_eq!(populated.written, vec![3, 4, 9]);
        assert_eq!(
            populated.read, only_read,
            "the pages only read are mapped ahead"
        );
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

    #[test]
    fn a_flow_writing_more_than_is_worth_doing_ahead_is_not_worked_ahead() {
        let pages = MAX_WRITTEN_PAGES + 1;
        let (first, _f1) = mapped_file(pages);
        let (second, _f2) = mapped_file(pages);
        for page in 0..pages {
            unsafe { std::ptr::write_volatile((first + page * PAGE) as *mut u8, 1) };
        }
        let hot = HotPages::new(pages * PAGE);
        let memory = |base| MemoryRange {
            base,
            len: pages * PAGE,
        };
        hot.learn(memory(first), 0);
        assert!(!hot.learning());
        hot.populate(memory(second));
        let populated = touched_pages(second, pages * PAGE).unwrap();
        assert!(
            populated.written.is_empty() && populated.read.is_empty(),
            "{} pages written ahead",
            populated.written.len()
        );
        unsafe {
            libc::munmap(first as *mut libc::c_void, pages * PAGE);
            libc::munmap(second as *mut libc::c_void, pages * PAGE);
        }
    }
}
