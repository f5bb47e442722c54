//! The part buffers of multipart uploads, kept for reuse between parts, appends and
//! uploads.
//!
//! # Why a pool
//! A part buffer is a few MiB. Allocated and freed once per part, it made the server's
//! peak memory grow with the blob size (31 MiB for a 10 MiB blob, 66 MiB for 2 GiB,
//! measured in `docs/benchmarks.md`): glibc serves the first allocation of that size with
//! its own mapping, but the first free raises its mapping threshold above the part size,
//! so every later buffer comes from the heap arena of whichever thread allocates it, and
//! freed buffers stay resident there (scattered over several arenas, and never trimmed
//! while anything lies above them). Allocating each buffer with a mapping of its own
//! instead would give the memory back, but faulting 5 MiB of fresh pages in for every
//! part costs about a quarter of the server's CPU per pushed byte. Reused buffers cost
//! neither: a pool keeps up to [`BufferPool::keep`] of them, the most one append holds at
//! once, so a single upload allocates them once and then only refills them, whatever its
//! size.
//!
//! A buffer comes back when the part sent from it is done and no one else holds its
//! bytes (`Bytes::try_into_mut`); one still shared, or one not of the part size, is simply
//! freed. Appends running at the same time allocate beyond the pool, so memory is bounded
//! by the number of concurrent appends, never by a blob's size.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// Idle part buffers of one size (see the module docs).
#[derive(Debug)]
pub(super) struct BufferPool {
    size: usize,
    keep: usize,
    idle: Mutex<Vec<BytesMut>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes that keeps up to `keep` idle ones.
    pub(super) fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool {
            size,
            keep,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The buffer size.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// How many idle buffers the pool keeps at most.
    #[cfg(test)]
    pub(super) fn keep(&self) -> usize {
        self.keep
    }

    /// An empty buffer of at least the pool's size: an idle one, or a new one.
    pub(super) fn take(&self) -> BytesMut {
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(mut buffer) => {
                buffer.clear();
                buffer
            }
            None => BytesMut::with_capacity(self.size),
        }
    }

    /// Gives back the bytes of a buffer that was taken, once they are sent. They are kept
    /// when nothing else refers to them, their allocation is of the pool's size or more,
    /// and the pool is not full; otherwise they are freed.
    pub(super) fn give(&self, bytes: Bytes) {
        let Ok(buffer) = bytes.try_into_mut() else {
            return;
        };
        if buffer.capacity() < self.size {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.keep {
            idle.push(buffer);
        }
    }

    /// How many idle buffers the pool holds now.
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer filled to the brim and frozen, as a full part is.
    fn full_part(pool: &BufferPool) -> Bytes {
        let mut buffer = pool.take();
        buffer.resize(pool.size(), 7);
        buffer.freeze()
    }

    #[test]
    fn a_sent_part_comes_back_with_its_allocation() {
        let pool = BufferPool::new(1 << 20, 4);
        let part = full_part(&pool);
        let address = part.as_ptr();
        pool.give(part);
        assert_eq!(pool.idle(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= 1 << 20);
        assert_eq!(again.as_ptr(), address, "the same allocation is reused");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_partly_filled_buffer_comes_back_at_full_capacity() {
        // The last part of an append is a buffer filled only in part.
        let pool = BufferPool::new(1 << 20, 4);
        let mut buffer = pool.take();
        buffer.extend_from_slice(b"the rest of a body");
        pool.give(buffer.freeze());
        assert_eq!(pool.idle(), 1);
        assert!(pool.take().capacity() >= 1 << 20);
    }

    #[test]
    fn shared_bytes_are_not_taken_back() {
        let pool = BufferPool::new(1 << 20, 4);
        let part = full_part(&pool);
        let still_sending = part.clone();
        pool.give(part);
        assert_eq!(
            pool.idle(),
            0,
            "a buffer someone still reads is never refilled"
        );
        pool.give(still_sending);
        assert_eq!(pool.idle(), 1, "the last holder gives it back");
    }

    #[test]
    fn small_buffers_are_not_kept() {
        // A tail read back from the store, or a piece split off a buffer, is smaller than
        // a part: keeping it would only make the next append grow it.
        let pool = BufferPool::new(1 << 20, 4);
        pool.give(Bytes::from(vec![1u8; 1000]));
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let pool = BufferPool::new(64 << 10, 2);
        assert_eq!(pool.keep(), 2);
        let parts: Vec<Bytes> = (0..5).map(|_| full_part(&pool)).collect();
        for part in parts {
            pool.give(part);
        }
        assert_eq!(pool.idle(), 2, "the other buffers are freed");
    }
}
