//! The event data a history keeps: one ring of bytes, so that keeping an
//! event copies its data once and dropping it frees nothing.
//!
//! (Holding each event's frame or data buffer instead meant a free per
//! event of memory last touched a thousand events earlier, on the
//! channel's consumer: that was most of what a history cost.)

/// Bytes appended at the back and dropped from the front, addressed by
/// their absolute offset (counted from the first byte ever appended).
///
/// A power-of-two buffer with a head and a length: appending copies, and
/// dropping moves the head (a `VecDeque<u8>`'s extend and drain cost four
/// times as many instructions per event).
#[derive(Debug, Default)]
pub(super) struct DataRing {
    /// Its length is zero or a power of two.
    buffer: Box<[u8]>,
    /// Where `first` is in `buffer`.
    head: usize,
    len: usize,
    /// Absolute offset of the oldest byte held.
    first: u64,
}

impl DataRing {
    /// Appends `data`; returns its absolute offset.
    #[inline]
    pub(super) fn push(&mut self, data: &[u8]) -> u64 {
        let start = self.end();
        if data.is_empty() {
            return start;
        }
        let needed = self.len + data.len();
        if needed > self.buffer.len() {
            self.grow(needed);
        }
        let mask = self.buffer.len() - 1;
        let tail = (self.head + self.len) & mask;
        match self.buffer.get_mut(tail..tail + data.len()) {
            Some(room) => room.copy_from_slice(data),
            None => {
                let (now, wrapped) = data.split_at(self.buffer.len() - tail);
                self.buffer[tail..].copy_from_slice(now);
                self.buffer[..wrapped.len()].copy_from_slice(wrapped);
            }
        }
        self.len = needed;
        start
    }

    /// Moves what it holds to the front of a buffer of at least `needed`
    /// bytes.
    #[cold]
    fn grow(&mut self, needed: usize) {
        let mut buffer = vec![0; needed.next_power_of_two()].into_boxed_slice();
        let (front, back) = self.slices(self.head, self.len);
        buffer[..front.len()].copy_from_slice(front);
        buffer[front.len()..front.len() + back.len()].copy_from_slice(back);
        self.buffer = buffer;
        self.head = 0;
    }

    /// Drops the oldest `len` bytes (all of them, if fewer are held).
    pub(super) fn drop_front(&mut self, len: usize) {
        let len = len.min(self.len);
        self.len -= len;
        self.first += len as u64;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + len) & (self.buffer.len() - 1)
        };
    }

    /// Bytes it can hold before growing.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The absolute offset of the oldest byte held (of the next one
    /// appended, when empty).
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// The absolute offset one past the newest byte.
    pub(super) fn end(&self) -> u64 {
        self.first + self.len as u64
    }

    /// The `len` bytes at absolute offset `start`, in at most two pieces
    /// (the ring may wrap inside them); empty pieces for bytes no longer,
    /// or not yet, held.
    pub(super) fn get(&self, start: u64, len: usize) -> (&[u8], &[u8]) {
        let (Some(at), true) = (
            start
                .checked_sub(self.first)
                .and_then(|at| usize::try_from(at).ok()),
            start.saturating_add(len as u64) <= self.end(),
        ) else {
            return (&[], &[]);
        };
        self.slices(self.head + at, len)
    }

    /// The `len` bytes from `at` in the buffer (wrapping), all held.
    fn slices(&self, at: usize, len: usize) -> (&[u8], &[u8]) {
        if self.buffer.is_empty() {
            return (&[], &[]);
        }
        let at = at & (self.buffer.len() - 1);
        let in_place = len.min(self.buffer.len() - at);
        (
            &self.buffer[at..at + in_place],
            &self.buffer[..len - in_place],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(ring: &DataRing, start: u64, len: usize) -> Vec<u8> {
        let (a, b) = ring.get(start, len);
        [a, b].concat()
    }

    #[test]
    fn reads_back_what_it_holds_across_the_wrap() {
        let mut ring = DataRing::default();
        let mut held = Vec::new();
        // Pushes and drops enough to wrap the deque's buffer many times.
        for n in 0..500u32 {
            let data = format!("[{n},\"{}\"]", "x".repeat((n % 13) as usize));
            let start = ring.push(data.as_bytes());
            held.push((start, data));
            while ring.len() > 200 {
                let (_, oldest) = held.remove(0);
                ring.drop_front(oldest.len());
            }
            for (start, data) in &held {
                assert_eq!(read(&ring, *start, data.len()), data.as_bytes());
            }
        }
        // Growing while wrapped keeps every byte in order.
        for n in 0..60u32 {
            let data = format!("<{n}>");
            held.push((ring.push(data.as_bytes()), data));
        }
        assert!(ring.len() > 256, "it grew");
        for (start, data) in &held {
            assert_eq!(read(&ring, *start, data.len()), data.as_bytes());
        }
    }

    #[test]
    fn bytes_not_held_read_as_empty() {
        let mut ring = DataRing::default();
        ring.push(b"abc");
        ring.push(b"def");
        ring.drop_front(3);
        assert_eq!(ring.get(0, 3), (&[][..], &[][..]), "dropped");
        assert_eq!(ring.get(3, 4), (&[][..], &[][..]), "past the end");
        assert_eq!(read(&ring, 3, 3), b"def");
        ring.drop_front(100);
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.push(b"g"), 6, "offsets go on");
        let mut empty = DataRing::default();
        assert_eq!(empty.push(b""), 0, "nothing to copy, no buffer needed");
        assert_eq!(empty.get(0, 0), (&[][..], &[][..]));
    }
}
