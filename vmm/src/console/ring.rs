//! The console's scrollback: the last bytes the guest wrote, in a fixed-size ring.

/// Keeps the last `capacity` bytes pushed into it. A push costs O(its length), whatever
/// came before; memory grows with what was written, up to `capacity`, and no further.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    data: Vec<u8>,
    capacity: usize,
    /// Once `data` is full: where the oldest byte is, and the next one is written.
    head: usize,
}

impl Ring {
    /// An empty ring that keeps `capacity` bytes (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            data: Vec::new(),
            capacity: capacity.max(1),
            head: 0,
        }
    }

    /// Appends `bytes`, dropping the oldest bytes beyond the capacity.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        if bytes.len() >= self.capacity {
            // Only the tail survives.
            let tail = bytes.get(bytes.len() - self.capacity..).unwrap_or_default();
            self.data.clear();
            self.data.extend_from_slice(tail);
            self.head = 0;
            return;
        }
        if self.data.len() < self.capacity {
            let room = self.capacity - self.data.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.data.extend_from_slice(now);
            bytes = rest;
        }
        while !bytes.is_empty() {
            let n = (self.capacity - self.head).min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            if let Some(dst) = self.data.get_mut(self.head..self.head + n) {
                dst.copy_from_slice(now);
            }
            self.head = (self.head + n) % self.capacity;
            bytes = rest;
        }
    }

    /// The bytes kept, oldest first, as two slices (the second is empty until it wraps).
    pub(crate) fn contents(&self) -> (&[u8], &[u8]) {
        let (newer, older) = self.data.split_at(self.head);
        (older, newer)
    }

    /// How many bytes are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    const MIB: usize = 1 << 20;

    fn kept(ring: &Ring) -> Vec<u8> {
        let (a, b) = ring.contents();
        [a, b].concat()
    }

    /// Byte `i` of a stream that does not repeat within 251 bytes.
    fn stream(from: usize, len: usize) -> Vec<u8> {
        (from..from + len)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect()
    }

    #[test]
    fn keeps_everything_below_capacity() {
        let mut r = Ring::new(16);
        assert_eq!(r.len(), 0);
        assert_eq!(kept(&r), b"");
        r.push(b"hello ");
        r.push(b"world");
        assert_eq!(kept(&r), b"hello world");
        r.push(b"");
        assert_eq!(kept(&r), b"hello world");
    }

    #[test]
    fn wraps_around_keeping_the_newest_bytes() {
        let mut r = Ring::new(8);
        r.push(b"abcdef");
        r.push(b"ghij");
        assert_eq!(kept(&r), b"cdefghij");
        let (older, newer) = r.contents();
        assert_eq!((older, newer), (&b"cdefgh"[..], &b"ij"[..]));
        // Byte by byte, across the wrap point several times.
        for b in b"klmnopqrstuvwxyz" {
            r.push(&[*b]);
        }
        assert_eq!(kept(&r), b"stuvwxyz");
        // A push that crosses the end of the buffer.
        r.push(b"01234");
        assert_eq!(kept(&r), b"xyz01234");
    }

    #[test]
    fn exactly_one_mib_is_kept() {
        let mut r = Ring::new(MIB);
        let all = stream(0, 3 * MIB + 12_345);
        for chunk in all.chunks(4093) {
            r.push(chunk);
        }
        assert_eq!(r.len(), MIB);
        assert_eq!(kept(&r), &all[all.len() - MIB..]);
        // One byte more drops exactly one.
        r.push(b"!");
        let k = kept(&r);
        assert_eq!(k.len(), MIB);
        assert_eq!(&k[..MIB - 1], &all[all.len() - MIB + 1..]);
        assert_eq!(k[MIB - 1], b'!');
    }

    #[test]
    fn a_write_as_large_as_the_ring_or_larger_keeps_its_tail() {
        let mut r = Ring::new(MIB);
        r.push(b"before");
        let big = stream(7, MIB);
        r.push(&big);
        assert_eq!(kept(&r), big);
        let bigger = stream(3, 5 * MIB + 1);
        r.push(&bigger);
        assert_eq!(kept(&r), &bigger[bigger.len() - MIB..]);
        // And it goes on wrapping normally afterwards.
        r.push(b"after");
        let k = kept(&r);
        assert_eq!(k.len(), MIB);
        assert!(k.ends_with(b"after"));
        assert_eq!(&k[..MIB - 5], &bigger[bigger.len() - MIB + 5..]);
    }

    #[test]
    fn a_write_just_under_capacity_after_wrapping() {
        let mut r = Ring::new(10);
        r.push(b"0123456789abc");
        assert_eq!(kept(&r), b"3456789abc");
        r.push(b"ABCDEFGHI");
        assert_eq!(kept(&r), b"cABCDEFGHI");
    }
}
