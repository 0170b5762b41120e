//! The process's allocator: mimalloc, asked the way its fast paths expect.
//!
//! mimalloc's own `GlobalAlloc` (the `mimalloc` crate) sends every Rust allocation through
//! `mi_malloc_aligned`, because every Rust allocation names an alignment. mimalloc 3 serves an
//! aligned request from its plain path only when the block size is a power of two; any other
//! size (a 48-byte node, a 1,500-byte buffer) takes the generic aligned path, which
//! over-allocates by `align - 1` (48 bytes become a 64-byte block) and runs ~100 more
//! instructions. That was ~7 such calls and ~1,400 instructions of a one-record HTTP get's ~31,600
//! (callgrind). The same fix is proposed upstream (purpleprotocol/mimalloc_rust#170).
//!
//! A request whose alignment is at most 16 and divides its size is met by any plain mimalloc
//! block: block sizes are multiples of 8 (of 16 from 16 bytes up, for sizes that are multiples of
//! 16) and a page's first block is 16-aligned. Those go to `mi_malloc`/`mi_zalloc`/`mi_realloc`;
//! anything else keeps the aligned calls. Debug builds check every pointer handed out.
//!
//! Compiled into the node binary and the benches (`#[path]`), not the library, which has no
//! `unsafe`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment every mimalloc block of a size that is a multiple of it has
/// (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc, with the plain calls where they satisfy the layout. See the module docs.
pub struct Allocator;

/// Whether a plain mimalloc block of `size` bytes is always aligned to `align`.
#[inline]
fn plain_fits(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

#[inline]
fn checked(ptr: *mut u8, align: usize) -> *mut u8 {
    debug_assert!(
        (ptr as usize).is_multiple_of(align),
        "mimalloc returned a block not aligned to {align}"
    );
    ptr
}

/// A block for `layout` from mimalloc's `plain` call where its blocks are aligned as asked,
/// else from its `aligned` one (`mi_malloc`/`mi_malloc_aligned`, or the zeroing pair).
///
/// # Safety
/// `layout` has a non-zero size (as `GlobalAlloc::alloc` requires of its callers).
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    if plain_fits(layout.size(), layout.align()) {
        // SAFETY: a mimalloc allocation call, given a size.
        checked(unsafe { plain(layout.size()) }.cast(), layout.align())
    } else {
        // SAFETY: a mimalloc allocation call, given a size and a power-of-two alignment.
        unsafe { aligned(layout.size(), layout.align()) }.cast()
    }
}

// SAFETY: every call is passed on to mimalloc, whose functions meet `GlobalAlloc`'s contract:
// the plain ones only where their blocks are aligned as the layout asks (see `plain_fits`), and
// `mi_free` takes blocks from either kind of call.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            allocate(
                layout,
                libmimalloc_sys::mi_malloc,
                libmimalloc_sys::mi_malloc_aligned,
            )
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            allocate(
                layout,
                libmimalloc_sys::mi_zalloc,
                libmimalloc_sys::mi_zalloc_aligned,
            )
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of the calls above.
        unsafe { libmimalloc_sys::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            // SAFETY: see the impl; mimalloc reallocates blocks from either kind of call.
            checked(
                unsafe { libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size) }.cast(),
                layout.align(),
            )
        } else {
            // SAFETY: see the impl.
            unsafe {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
            }
            .cast()
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every size up to 64 KiB at every alignment up to 4 KiB, allocated, grown and shrunk
    /// (to sizes that take the plain calls and sizes that do not, so each kind of block is
    /// reallocated by the other kind of call): each block is aligned as asked and keeps its bytes.
    #[test]
    fn every_block_is_aligned_as_asked_and_keeps_its_bytes() {
        // Imported here, not for the module: the benches include this file without its tests.
        use super::{Allocator, GlobalAlloc, Layout};
        let sizes = (1..=1024).chain((1025..=65_536).step_by(97));
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed once, with its layout.
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    p.write_bytes(0xA5, size);
                    // Odd sizes grow to a multiple of the alignment, even ones shrink to one.
                    let bigger = match size % 2 {
                        1 => (size * 3 / 2 + 8).next_multiple_of(align),
                        _ => size * 3 / 2 + 9,
                    };
                    let q = Allocator.realloc(p, layout, bigger);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "{size}/{align} grown"
                    );
                    assert!((0..size).all(|i| *q.add(i) == 0xA5), "{size}/{align} grown");
                    let smaller = match size % 2 {
                        1 => size.div_ceil(2) | 1,
                        _ => size.div_ceil(2).next_multiple_of(align).min(bigger),
                    };
                    let grown = Layout::from_size_align(bigger, align).unwrap();
                    let r = Allocator.realloc(q, grown, smaller);
                    assert!(
                        !r.is_null() && (r as usize).is_multiple_of(align),
                        "{size}/{align} shrunk"
                    );
                    assert!(
                        (0..smaller.min(size)).all(|i| *r.add(i) == 0xA5),
                        "{size}/{align} shrunk"
                    );
                    Allocator.dealloc(r, Layout::from_size_align(smaller, align).unwrap());
                    let z = Allocator.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "{size}/{align} zeroed"
                    );
                    assert!((0..size).all(|i| *z.add(i) == 0), "{size}/{align} zeroed");
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }
}
