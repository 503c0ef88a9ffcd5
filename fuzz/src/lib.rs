//! Property checks behind mcp-warden's fuzz targets.
//!
//! Each module has one `check(data: &[u8])` that panics when a property does
//! not hold. The libFuzzer targets in `fuzz_targets/` call exactly these
//! functions, and `tests/replay.rs` replays every file of `corpus/` and
//! `regressions/` through them with a plain `cargo test`, so an input that
//! once crashed stays a regression case without libFuzzer.
//!
//! Input formats are kept close to the real inputs (a request head as text,
//! a JSON body after a two-byte header, a policy file as is) so corpora can
//! be seeded from the test fixtures; see `docs/fuzzing.md`.

pub mod mask_stream;
pub mod policy_parse;
pub mod request_parse;
pub mod ws_frame_tap;

/// A small deterministic generator of chunk sizes from one seed byte, so a
/// body is split the same way on every replay.
#[derive(Debug, Clone)]
pub struct Splitter {
    state: u32,
    max: usize,
}

impl Splitter {
    /// Seed `0` means "one chunk"; otherwise chunks of 1..=max bytes, where
    /// `max` is small for most seeds so splits land inside tokens.
    pub fn new(seed: u8) -> Splitter {
        let max = match seed & 0x03 {
            0 => 1,
            1 => 7,
            2 => 64,
            _ => 4096,
        };
        Splitter {
            state: u32::from(seed) | 0x9e37_0000,
            max: if seed == 0 { usize::MAX } else { max },
        }
    }

    fn next_len(&mut self) -> usize {
        if self.max == usize::MAX {
            return usize::MAX;
        }
        // xorshift32
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        1 + (x as usize % self.max)
    }

    /// Split `data` into consecutive chunks (at least one, possibly empty).
    pub fn split<'a>(&mut self, data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.next_len().min(rest.len());
            let (a, b) = rest.split_at(n);
            out.push(a);
            rest = b;
        }
        if out.is_empty() {
            out.push(rest);
        }
        out
    }
}
