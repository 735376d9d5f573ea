//! `memcpy` and `memmove` for the static x86_64 binary, in place of musl's.
//!
//! musl's x86_64 `memcpy` copies with string instructions: `movsb` one byte at a time until
//! the destination is aligned, `rep movsq` for the words, `movsb` again for the tail. Each of
//! those is microcoded, with a start-up cost that dominates the short copies a proxy makes
//! (moved futures, header names and values, protobuf fields: about 170 a chat request, three
//! in four of 256 bytes or less). On this project's machines (AMD EPYC under KVM) a copy of 5
//! to 130 bytes took 30–40 ns through musl's and 3–5 ns through glibc's, and `memcpy` was the
//! hottest function of the static binary's user time (benches/RESULTS.md, "What was tried"). Its
//! `memmove` copies backward with `std; rep movsq`, slower still. glibc builds keep glibc's,
//! which are vectorised; aarch64's musl has an optimised assembly `memcpy` of its own.
//!
//! Here every length up to 256 bytes is one to sixteen 16-byte (or smaller) loads from the two
//! ends of the source, then as many stores: all loads come before any store, so the ranges may
//! overlap. Longer copies go in 64-byte blocks, forward or backward as the overlap requires,
//! their stores aligned; the bytes the blocks miss at the ends are loaded first and stored
//! last. No string instruction is used, for long copies either: on 1.5–32 KiB here `rep movsb`
//! on unaligned data ran at about 3 bytes a nanosecond and musl's aligned `rep movsq` at 11–23,
//! the loop at 30–50.
//!
//! Defining `memmove` as well keeps musl's `memcpy` out of the link altogether: its object also
//! defines `__memcpy_fwd`, which only musl's `memmove` calls.

use core::arch::x86_64::__m128i;

/// Sixteen bytes, held in an SSE register (SSE2 is part of x86_64's baseline).
type V = __m128i;
/// Sixty-four bytes: one block of the long copies.
type Block = [V; 4];

/// # Safety
/// `p` is valid for reading `size_of::<T>()` bytes; no alignment is needed.
#[inline(always)]
unsafe fn load<T>(p: *const u8) -> T {
    // SAFETY: the caller's contract.
    unsafe { p.cast::<T>().read_unaligned() }
}

/// # Safety
/// `p` is valid for writing `size_of::<T>()` bytes; no alignment is needed.
#[inline(always)]
unsafe fn store<T>(p: *mut u8, value: T) {
    // SAFETY: the caller's contract.
    unsafe { p.cast::<T>().write_unaligned(value) }
}

/// # Safety
/// `p` is valid for reading 64 bytes.
#[inline(always)]
unsafe fn load_block(p: *const u8) -> Block {
    // SAFETY: the caller's contract; four 16-byte loads, each in the 64 bytes.
    unsafe { [load(p), load(p.add(16)), load(p.add(32)), load(p.add(48))] }
}

/// # Safety
/// `p` is valid for writing 64 bytes.
#[inline(always)]
unsafe fn store_block(p: *mut u8, [a, b, c, d]: Block) {
    // SAFETY: the caller's contract; four 16-byte stores, each in the 64 bytes.
    unsafe {
        store(p, a);
        store(p.add(16), b);
        store(p.add(32), c);
        store(p.add(48), d);
    }
}

/// Copies `n` bytes, `size_of::<T>() <= n <= 2 * size_of::<T>()`, as one `T` from each end
/// (overlapping in the middle), both loaded before either is stored. (Sixteen bytes at most:
/// a larger `T` is copied through the stack, so the longer arms load their pieces one by one.)
///
/// # Safety
/// `src` is valid for reading and `dst` for writing `n` bytes; they may overlap.
#[inline(always)]
unsafe fn ends<T>(dst: *mut u8, src: *const u8, n: usize) {
    let last = n - size_of::<T>();
    // SAFETY: both `T`s lie in the `n` bytes, since `size_of::<T>() <= n`.
    unsafe {
        let head: T = load(src);
        let tail: T = load(src.add(last));
        store(dst, head);
        store(dst.add(last), tail);
    }
}

/// Tells the optimiser the loop it is in touches memory it cannot see, so that it does not
/// turn the loop back into a call to `memcpy` or `memmove`: this function.
#[inline(always)]
fn opaque() {
    // SAFETY: an empty instruction sequence; it reads and writes nothing.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// Copies `n` bytes from `src` to `dst`. The ranges may overlap.
///
/// # Safety
/// `src` is valid for reading and `dst` for writing `n` bytes (either may be dangling when `n`
/// is 0).
#[inline(always)]
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY (all arms): every access is inside the first `n` bytes of `src` or `dst`, which
    // the caller vouches for; each arm loads everything it stores before its first store.
    unsafe {
        match n {
            0 => {}
            1 => *dst = *src,
            2..=3 => ends::<u16>(dst, src, n),
            4..=7 => ends::<u32>(dst, src, n),
            8..=16 => ends::<u64>(dst, src, n),
            17..=32 => ends::<V>(dst, src, n),
            33..=64 => {
                let (a, b): (V, V) = (load(src), load(src.add(16)));
                let (c, d): (V, V) = (load(src.add(n - 32)), load(src.add(n - 16)));
                store(dst, a);
                store(dst.add(16), b);
                store(dst.add(n - 32), c);
                store(dst.add(n - 16), d);
            }
            65..=128 => {
                let (head, tail) = (load_block(src), load_block(src.add(n - 64)));
                store_block(dst, head);
                store_block(dst.add(n - 64), tail);
            }
            // The commonest long copies (moved futures and messages): straight-line, no loop
            // exit to mispredict. Sixteen loads, which x86_64's sixteen SSE registers hold.
            129..=256 => {
                let (a, b) = (load_block(src), load_block(src.add(64)));
                let (c, d) = (load_block(src.add(n - 128)), load_block(src.add(n - 64)));
                store_block(dst, a);
                store_block(dst.add(64), b);
                store_block(dst.add(n - 128), c);
                store_block(dst.add(n - 64), d);
            }
            // Forward unless `dst` starts inside the source, where a forward copy would
            // overwrite bytes before reading them (`dst - src` wraps to a large number when
            // `dst` is below `src`).
            _ if (dst as usize).wrapping_sub(src as usize) >= n => forward(dst, src, n),
            _ => backward(dst, src, n),
        }
    }
}

/// Copies `n > 256` bytes front to back: the first 16 and the last 64 bytes loaded first and
/// stored last, 64-byte blocks between them stored at 16-byte-aligned addresses.
///
/// # Safety
/// As [`copy`], with `n > 256`, and `dst` not inside the source after its first byte (a
/// forward copy reads each byte before anything is stored over it).
#[inline(always)]
unsafe fn forward(dst: *mut u8, src: *const u8, n: usize) {
    debug_assert!(n > 256);
    // SAFETY: every block ends before `n - 64 + 64 = n`; head and tail are inside `n`.
    unsafe {
        let head: V = load(src);
        let tail = load_block(src.add(n - 64));
        // 1 to 16: the head covers the bytes before the first aligned store.
        let mut i = 16 - (dst as usize & 15);
        while i < n - 64 {
            opaque();
            store_block(dst.add(i), load_block(src.add(i)));
            i += 64;
        }
        store(dst, head);
        store_block(dst.add(n - 64), tail);
    }
}

/// Copies `n > 256` bytes back to front: the first 64 and the last 16 bytes loaded first and
/// stored last, 64-byte blocks between them stored at 16-byte-aligned addresses.
///
/// # Safety
/// As [`copy`], with `n > 256`, and `dst` not below `src` within the source (a backward copy
/// reads each byte before anything is stored over it when `dst` is above `src`).
#[inline(always)]
unsafe fn backward(dst: *mut u8, src: *const u8, n: usize) {
    debug_assert!(n > 256);
    // SAFETY: every block starts at 1 or more (`end > 64` before each step); head and tail
    // are inside `n`.
    unsafe {
        let head = load_block(src);
        let tail: V = load(src.add(n - 16));
        // n - 15 to n: the tail covers the bytes after the last aligned store.
        let mut end = n - ((dst as usize).wrapping_add(n) & 15);
        while end > 64 {
            opaque();
            end -= 64;
            store_block(dst.add(end), load_block(src.add(end)));
        }
        store_block(dst, head);
        store(dst.add(n - 16), tail);
    }
}

/// C's `memcpy`: [`copy`], which also allows the overlap `memcpy` does not promise.
///
/// # Safety
/// C's contract for `memcpy`.
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract, which is `copy`'s and more.
    unsafe { copy(dst, src, n) };
    dst
}

/// C's `memmove`.
///
/// # Safety
/// C's contract for `memmove`.
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract, which is `copy`'s.
    unsafe { copy(dst, src, n) };
    dst
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::copy;

    /// A buffer whose every byte differs from its neighbours', so a byte copied from the wrong
    /// place shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// `copy` within one buffer, from `from` to `to`, against the standard library's.
    fn check_within(len: usize, from: usize, to: usize, n: usize) {
        let mut ours = pattern(len);
        let mut theirs = ours.clone();
        theirs.copy_within(from..from + n, to);
        let base = ours.as_mut_ptr();
        // SAFETY: both ranges are inside the buffer (the callers keep them so).
        unsafe { copy(base.add(to), base.add(from), n) };
        assert_eq!(ours, theirs, "len {len}, from {from}, to {to}, n {n}");
    }

    #[test]
    fn every_length_to_600_at_every_alignment() {
        let src = pattern(700);
        for n in 0..=600 {
            for skew in 0..16 {
                let mut dst = vec![0xA5u8; n + 32];
                // SAFETY: `skew + n` bytes fit `dst`, `n` fit `src` after `skew`.
                unsafe { copy(dst.as_mut_ptr().add(skew), src.as_ptr().add(15 - skew), n) };
                assert_eq!(
                    &dst[skew..skew + n],
                    &src[15 - skew..15 - skew + n],
                    "n {n}"
                );
                // Nothing written outside the destination.
                assert!(dst[..skew].iter().all(|&b| b == 0xA5), "n {n}, before");
                assert!(dst[skew + n..].iter().all(|&b| b == 0xA5), "n {n}, after");
            }
        }
    }

    #[test]
    fn overlapping_either_way_at_every_distance() {
        for n in [
            0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 193,
            255, 256, 257, 300, 319, 320, 321, 383, 384, 385, 1000, 4099,
        ] {
            for distance in 0..=n.min(200) + 1 {
                check_within(2 * n + 400, 200, 200 + distance, n);
                check_within(2 * n + 400, 200 + distance, 200, n);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_copy_within_a_buffer_matches_copy_within(
            n in 0usize..2048,
            from in 0usize..2100,
            to in 0usize..2100,
        ) {
            check_within(4200, from, to, n);
        }
    }
}
