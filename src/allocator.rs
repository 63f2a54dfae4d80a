//! The process's memory allocator: mimalloc, and how it is asked.
//!
//! Owns: the `GlobalAlloc` the binaries install ([`Allocator`]) and mimalloc's process-wide
//! options ([`return_freed_memory_promptly`]).
//! Does not: install itself; `main.rs` declares the `#[global_allocator]` (a library must not
//! choose one for the programs that link it).

use std::alloc::{GlobalAlloc, Layout};

// mimalloc's `mi_option_set`, `mi_malloc`, `mi_zalloc` and `mi_realloc`, declared here: the
// `mimalloc` crate exposes options only behind a feature that pulls in another crate, and its
// allocator calls only the aligned entry points. The symbols are in the mimalloc it links.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_malloc(size: usize) -> *mut std::ffi::c_void;
    fn mi_zalloc(size: usize) -> *mut std::ffi::c_void;
    fn mi_realloc(p: *mut std::ffi::c_void, newsize: usize) -> *mut std::ffi::c_void;
}

/// mimalloc, asked for a plain block whenever that is aligned enough, as Rust's `System`
/// allocator asks `malloc`. `mimalloc::MiMalloc` calls `mi_malloc_aligned` for every
/// allocation, and mimalloc v3 serves that from its free list only when the next free block
/// happens to be aligned and its page has one; otherwise it over-allocates by the alignment,
/// into the next size class (so the right class's pages are never made). Measured (issue 12,
/// callgrind, one node, `weak` point reads): ~10 allocations per read took that path.
pub struct Allocator;

/// `mi_malloc`'s guaranteed alignment for blocks of at least this size (`MI_MAX_ALIGN_SIZE`,
/// mimalloc's `types.h`: blocks are two machine words apart on 64-bit targets); smaller blocks
/// are aligned to their size rounded up to a word.
const MI_MAX_ALIGN_SIZE: usize = 16;

fn plain(align: usize, size: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

// SAFETY: every block comes from mimalloc, through `mi_malloc`/`mi_zalloc`/`mi_realloc` only
// when `plain` holds (then the block is aligned to at least `align`, see MI_MAX_ALIGN_SIZE)
// and through `MiMalloc` otherwise; mimalloc frees and reallocates blocks of both kinds.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi_malloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi_zalloc(layout.size()).cast()
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

/// `mi_option_purge_delay` in the bundled mimalloc v3 (`mimalloc.h`, enum `mi_option_e`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Freed memory goes back to the OS at once instead of after mimalloc's default 10 ms delay:
/// a delayed purge only runs when the same thread allocates or frees again, so memory freed
/// by a thread that then went idle (a large request's body, a read pool thread) stayed
/// resident. Measured (issue 12, `scripts/memory.sh`): a refused 1-million-statement request
/// left the leader 50% larger, now 1%; no throughput change within noise.
/// An operator's own `MIMALLOC_PURGE_DELAY` wins.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain setter of a process-wide option; any value is valid for this option
    // (0 = purge immediately), and it may be called at any time from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reallocates `p` (a live block of `layout`) to `new_size` through `a`, and checks that
    /// the new block is aligned as `layout` asks and kept its first `kept` bytes (0xA5).
    fn realloc_checked(
        a: &Allocator,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
        kept: usize,
    ) -> *mut u8 {
        // SAFETY: the caller passes a live block of `layout` from `a`; `new_size` is non-zero.
        let q = unsafe { a.realloc(p, layout, new_size) };
        let (size, align) = (layout.size(), layout.align());
        assert!(!q.is_null());
        assert_eq!(
            q as usize % align,
            0,
            "realloc {size} -> {new_size} align {align}"
        );
        // SAFETY: the first `kept` (<= both sizes) bytes were copied to the new block.
        let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
        assert!(
            bytes.iter().all(|b| *b == 0xA5),
            "realloc {size} -> {new_size}"
        );
        q
    }

    /// Every block the allocator hands out is aligned as asked, whichever path served it, and
    /// keeps its bytes through reallocations that cross size classes and paths.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = Allocator;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [
                1usize, 3, 8, 12, 16, 24, 40, 48, 100, 1000, 1024, 5000, 70_000,
            ] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // Many at once, so blocks come from the middle of pages, not just the first.
                let blocks: Vec<*mut u8> = (0..64)
                    .map(|i| {
                        // SAFETY: non-zero size; the block is freed below with this layout.
                        let p = unsafe {
                            if i % 2 == 0 {
                                a.alloc(layout)
                            } else {
                                a.alloc_zeroed(layout)
                            }
                        };
                        assert!(!p.is_null(), "size {size} align {align}");
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if i % 2 == 1 {
                            // SAFETY: `size` bytes were just allocated at `p`.
                            let zeroed = unsafe { std::slice::from_raw_parts(p, size) };
                            assert!(zeroed.iter().all(|b| *b == 0), "size {size}");
                        }
                        // SAFETY: as above.
                        unsafe { std::ptr::write_bytes(p, 0xA5, size) };
                        p
                    })
                    .collect();
                for p in blocks {
                    let grown = Layout::from_size_align(size * 3 + 7, align).unwrap();
                    let q = realloc_checked(&a, p, layout, grown.size(), size);
                    // Shrunk below the alignment, the block must still be aligned as asked
                    // (a plain `mi_realloc` to 8 bytes may move it to an 8-byte block).
                    let small = Layout::from_size_align(size.min(1 + size % 8), align).unwrap();
                    let r = realloc_checked(&a, q, grown, small.size(), small.size());
                    // SAFETY: `r` is the live block of `small`.
                    unsafe { a.dealloc(r, small) };
                }
            }
        }
    }
}
