//! The plugin's memory allocator (feature `event-arena`, on by default).
//!
//! warden gives every event a fresh instance and throws it away after the hook returns, so
//! memory a hook frees is never worth reusing for long. A general-purpose allocator (the
//! C library's dlmalloc) spends much of a small hook's time keeping free lists that are
//! discarded unread; this one hands out memory in address order and takes back only what
//! was freed last (a temporary, a `Vec` that grows in place), which is most frees in a hook.
//!
//! Blocks of [`CHUNK`] bytes or more (a large response body, a big `Vec`) still come from
//! dlmalloc, which reuses them. A hook that allocates and frees many small blocks in a long
//! loop uses more memory than with dlmalloc; it is still bound by the flow's `memory_mib`,
//! and a plugin can turn the feature off (`default-features = false`) to use dlmalloc alone.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::alloc::System;

/// The arena takes memory from dlmalloc this much at a time; a block this large or larger
/// is dlmalloc's own. Small enough that a typical hook's first chunk fits in the memory the
/// instance starts with, so it never has to grow its memory.
const CHUNK: usize = 8 * 1024;

/// Hands out `[next, end)` upwards; a new chunk from dlmalloc when that is full.
struct EventArena {
    // An instance runs on one thread: relaxed atomics compile to plain loads and stores on
    // wasm32 and keep the static safe to share.
    next: AtomicUsize,
    end: AtomicUsize,
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ARENA: EventArena = EventArena::new();

fn is_large(size: usize) -> bool {
    size >= CHUNK
}

impl EventArena {
    const fn new() -> Self {
        EventArena {
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    fn alloc_small(&self, layout: Layout) -> *mut u8 {
        let start = self.next.load(Relaxed).next_multiple_of(layout.align());
        let stop = start + layout.size();
        if start != 0 && stop <= self.end.load(Relaxed) {
            self.next.store(stop, Relaxed);
            return start as *mut u8;
        }
        // A fresh chunk, aligned for `layout`; what was left of the last one is abandoned.
        let Ok(chunk) = Layout::from_size_align(CHUNK, layout.align().max(8)) else {
            return null_mut();
        };
        // SAFETY: `chunk` is not zero-sized.
        let start = unsafe { System.alloc(chunk) } as usize;
        if start == 0 {
            return null_mut();
        }
        self.next.store(start + layout.size(), Relaxed);
        self.end.store(start + CHUNK, Relaxed);
        start as *mut u8
    }

    /// Takes the block back if nothing was allocated after it.
    fn dealloc_small(&self, ptr: *mut u8, size: usize) {
        if ptr as usize + size == self.next.load(Relaxed) {
            self.next.store(ptr as usize, Relaxed);
        }
    }
}

// SAFETY: blocks never overlap: small ones are carved from chunks dlmalloc gave the arena
// and never gets back, large ones are dlmalloc's; a block's size says which it is.
unsafe impl GlobalAlloc for EventArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            // SAFETY: forwarded from the caller.
            return unsafe { System.alloc(layout) };
        }
        self.alloc_small(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            // SAFETY: a large block came from `System` with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        }
        self.dealloc_small(ptr, layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            // SAFETY: forwarded from the caller; the block is dlmalloc's and stays so.
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) if ptr as usize + layout.size() == self.next.load(Relaxed) => {
                // The last block grows or shrinks in place when its chunk has room.
                if ptr as usize + new_size <= self.end.load(Relaxed) {
                    self.next.store(ptr as usize + new_size, Relaxed);
                    return ptr;
                }
                // SAFETY: forwarded from the caller.
                unsafe { self.move_block(ptr, layout, new_size) }
            }
            (false, false) if new_size <= layout.size() => ptr,
            // SAFETY: forwarded from the caller.
            _ => unsafe { self.move_block(ptr, layout, new_size) },
        }
    }
}

impl EventArena {
    /// `realloc` by copying into a new block, small or large as `new_size` says.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    unsafe fn move_block(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `realloc`'s contract makes this layout valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded from the caller.
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn blocks_are_handed_out_in_order_and_do_not_overlap() {
        let arena = EventArena::new();
        unsafe {
            let a = arena.alloc(layout(24));
            let b = arena.alloc(Layout::from_size_align(10, 16).unwrap());
            let c = arena.alloc(layout(3));
            assert!(!a.is_null() && !b.is_null() && !c.is_null());
            assert!(b as usize >= a as usize + 24);
            assert_eq!(b as usize % 16, 0, "alignment kept");
            assert!(c as usize >= b as usize + 10);
        }
    }

    #[test]
    fn the_last_block_is_taken_back_and_an_earlier_one_is_not() {
        let arena = EventArena::new();
        unsafe {
            let a = arena.alloc(layout(64));
            let b = arena.alloc(layout(64));
            arena.dealloc(b, layout(64));
            assert_eq!(arena.alloc(layout(64)), b, "the freed last block is reused");
            arena.dealloc(a, layout(64));
            let c = arena.alloc(layout(64));
            assert_ne!(
                c, a,
                "a block freed out of order is not reused while b lives"
            );
            assert_ne!(c, b);
        }
    }

    #[test]
    fn the_last_block_grows_in_place_and_keeps_its_contents_when_moved() {
        let arena = EventArena::new();
        unsafe {
            let a = arena.alloc(layout(16));
            a.copy_from(b"0123456789abcdef".as_ptr(), 16);
            let grown = arena.realloc(a, layout(16), 1000);
            assert_eq!(grown, a, "grown in place");
            let _pinned = arena.alloc(layout(8));
            let moved = arena.realloc(grown, layout(1000), 2000);
            assert_ne!(moved, grown, "not the last block any more: moved");
            assert_eq!(std::slice::from_raw_parts(moved, 16), b"0123456789abcdef");
        }
    }

    #[test]
    fn a_full_chunk_is_followed_by_a_new_one() {
        let arena = EventArena::new();
        unsafe {
            let first = arena.alloc(layout(CHUNK - 8));
            let second = arena.alloc(layout(64));
            assert!(!second.is_null());
            let first = first as usize..first as usize + CHUNK - 8;
            assert!(!first.contains(&(second as usize)));
        }
    }

    #[test]
    fn large_blocks_cross_to_dlmalloc_and_back_with_their_contents() {
        let arena = EventArena::new();
        unsafe {
            let small = arena.alloc(layout(100));
            small.write_bytes(7, 100);
            let large = arena.realloc(small, layout(100), 4 * CHUNK);
            assert!(!large.is_null());
            assert_eq!(std::slice::from_raw_parts(large, 100), [7; 100]);
            let larger = arena.realloc(large, layout(4 * CHUNK), 8 * CHUNK);
            let small_again = arena.realloc(larger, layout(8 * CHUNK), 50);
            assert_eq!(std::slice::from_raw_parts(small_again, 50), [7; 50]);
            arena.dealloc(small_again, layout(50));
        }
    }
}
