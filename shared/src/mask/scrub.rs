//! Scrubbing known values: once a value is known to be secret — a value the
//! rules or detectors masked in an object, or the sidecar's own upstream
//! token — every other occurrence of it is replaced by [`MARKER`]: raw,
//! base64-encoded (standard and URL-safe alphabets, padded or not), and
//! inside longer base64 text at any byte offset, as a substring of any
//! string.
//!
//! [`ScrubSet`] is the compiled set of byte patterns; [`StreamScrubber`]
//! applies it to a byte stream chunk by chunk. It holds
//! back only a tail that could still grow into a match, so a value that
//! straddles two chunks is caught, memory is bounded by the longest pattern,
//! and a stream whose chunks end in ordinary bytes (a watch event's `}\n`)
//! is not delayed at all.
//!
//! Which values are worth scrubbing is a trade-off, see [`MIN_SCRUB_BYTES`].
//!
//! Cost: [`ScrubSet::for_object`] (built for every object in which something
//! was masked) keeps at most [`WINDOW`] bytes of each form of a value; a
//! string in which such a window of a longer value is found is replaced as
//! a whole (the rest of the value follows the window). Such a set is small
//! and searched in a few short strings, so it builds no automaton: one pass
//! over a string samples its 4-byte grams every few bytes in a small filter
//! of the grams the forms start with (`GramFilter`), compares the forms'
//! first bytes only where it hits, and only past that makes the forms and
//! compares them (most objects hold none: making every form was most of the
//! set's cost). [`ScrubSet::new`] (the token, built once per rotation,
//! searched over every body) matches the whole forms exactly with one
//! Aho-Corasick automaton (built on first use), so a string is scanned once
//! whatever the number of forms; the automaton runs only where a gram
//! filter of the forms hits (4,096 bits for strings, 65,536 for the byte
//! scan of bodies, whose text hits the smaller one too often).

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::MARKER;

/// Shortest value (in bytes, decoded) whose raw occurrences are scrubbed.
///
/// Shorter masked values are common non-secret configuration that happens to
/// sit under a secret-looking name (`"true"`, `"3600"`, `"admin"`, a port):
/// scrubbing them everywhere would rewrite label values, selectors and other
/// fields of the same object, and a client that writes the object back
/// (`kubectl edit`, read-modify-write controllers) would then fail or store
/// the marker. Six bytes keeps such values intact and still covers real
/// passwords and tokens.
pub const MIN_SCRUB_BYTES: usize = 6;

/// Shortest value whose full base64 encodings (8 characters or more) are
/// scrubbed: an exact base64 copy of a 4-byte value is already distinctive.
pub const MIN_ENCODED_SCRUB_BYTES: usize = 4;

/// Longest pattern of a [`ScrubSet::for_object`]: longer forms are cut to
/// their first `WINDOW` bytes, and a string holding such a window is
/// replaced whole.
pub const WINDOW: usize = 64;

/// Forms [`forms`] makes of one value at most: the value, 4 encodings, 6
/// cores.
const FORMS_PER_VALUE: usize = 11;

/// Shortest base64 "core" (the characters of an encoding that depend only on
/// the value, whatever precedes and follows it) matched inside longer
/// base64 text: 8 characters, 48 bits.
const MIN_CORE_CHARS: usize = 8;

/// A compiled set of values to scrub. `Debug` prints only the number of
/// patterns: the set holds secrets.
#[derive(Clone)]
pub struct ScrubSet {
    /// Every form of every value: built with a token set; for an object
    /// set on first need, from `heads` (see [`ScrubSet::for_object`]).
    forms: OnceLock<Forms>,
    /// Object sets: the first bytes of each value, as many as its forms
    /// depend on (`forms` reads `WINDOW + 3` and whether there are more).
    heads: Patterns,
    /// Object sets: the first [`FORM_HEAD`] bytes of every form (short
    /// values' forms whole), made with the set ([`form_heads`]). The gram
    /// filter is built from them, and a candidate it finds is compared with
    /// them before the forms are made.
    form_starts: Patterns,
    /// True when no value has a form (all too short).
    empty: bool,
    /// Object sets are small and searched in few, short strings: a pattern
    /// at a time, without building an automaton (which costs more than the
    /// search).
    naive: bool,
    /// The gram filter of the text patterns (see [`GramFilter`]): naive
    /// sets search with it, token sets run their text automaton only where
    /// it hits. `None` when a text pattern is too short for it (or there is
    /// none): then the patterns or the automaton search every string. An
    /// object set's filter is built from the first bytes of each form
    /// ([`form_heads`]), so its forms need not exist unless it hits.
    grams: Option<GramFilter>,
    /// Token sets: a wide gram filter of all patterns, the prefilter of the
    /// byte scan ([`StreamScrubber`]) over every response body. The
    /// automaton's own prefilter (rare bytes of the patterns' starts)
    /// stopped every few bytes in JSON for some tokens: up to ~100
    /// instructions a byte for a JWT, with this filter about one. `None`
    /// for object sets, and when a pattern is too short for it.
    byte_grams: Option<Box<GramFilter<WIDE_GRAM_WORDS>>>,
    /// Token sets: which pairs of bytes start a pattern (65,536 bits), the
    /// check at the starts a hit of `grams` names before the patterns are
    /// compared there, and at each position of a chunk's possible tail
    /// ([`ScrubSet::partial_tail`]). `None` for object sets.
    pairs: Option<Box<PairSet>>,
    /// Length of the shortest pattern (object sets: at most that): a
    /// shorter string holds none.
    min_len: usize,
    /// Object sets: about how many text patterns the forms will be, for
    /// [`RunFilter`]'s choice of search.
    text_count: usize,
    /// All patterns (bytes, streams), built on first use.
    bytes: OnceLock<Option<AhoCorasick>>,
    /// The valid UTF-8 patterns (strings), built on first use, with their
    /// `window` flags.
    text: OnceLock<Option<(AhoCorasick, Vec<bool>)>>,
}

/// The forms of a set's values, and what is derived from them.
#[derive(Clone)]
struct Forms {
    /// Every form of every value. Token sets: longest first, deduplicated.
    /// Object sets: in the order the forms were made, because most objects
    /// hold no form anywhere and sorting for every one cost more than the
    /// search; [`ScrubSet::scrub_str`] puts them in order when one is found.
    patterns: Patterns,
    /// Per pattern: a window of a longer value (the string holding it is
    /// replaced whole).
    window: Vec<bool>,
    /// Naive sets: the indexes in `patterns` of the valid UTF-8 patterns
    /// (the ones strings can hold), in order.
    texts: Vec<usize>,
    first_bytes: [bool; 256],
    max_len: usize,
}

impl Forms {
    /// The forms of `count` values.
    fn new<'a>(
        values: impl Iterator<Item = &'a [u8]>,
        count: usize,
        window_len: usize,
        naive: bool,
    ) -> Forms {
        let n = count * FORMS_PER_VALUE;
        let (mut patterns, mut window) =
            (Patterns::with_capacity(n, n * 32), Vec::with_capacity(n));
        for v in values {
            forms(v, window_len, &mut patterns, &mut window);
        }
        if !naive {
            // Longest first; for equal patterns the window (whole-string)
            // wins (see `ordered`). The automata do not depend on the order,
            // but `partial_tail` and `Debug` counts are simpler without
            // duplicates, and a token set is built once per rotation.
            let (p, w) = {
                let sorted = ordered(patterns.iter().zip(window.iter().copied()));
                let mut p = Patterns::with_capacity(sorted.len(), patterns.buf.len());
                for (f, _) in &sorted {
                    p.push(f);
                }
                (p, sorted.iter().map(|(_, w)| *w).collect())
            };
            (patterns, window) = (p, w);
        }
        let mut first_bytes = [false; 256];
        for p in patterns.iter() {
            if let Some(b) = p.first() {
                first_bytes[usize::from(*b)] = true;
            }
        }
        let texts: Vec<usize> = if naive {
            patterns
                .iter()
                .enumerate()
                // Encodings are ASCII; only a raw value can be other bytes.
                .filter(|(_, p)| p.is_ascii() || std::str::from_utf8(p).is_ok())
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        };
        Forms {
            max_len: patterns.iter().map(<[u8]>::len).max().unwrap_or(0),
            patterns,
            window,
            texts,
            first_bytes,
        }
    }
}

impl fmt::Debug for ScrubSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubSet")
            .field("patterns", &self.pattern_count())
            .finish()
    }
}

impl Default for ScrubSet {
    fn default() -> Self {
        ScrubSet::new(std::iter::empty::<&[u8]>())
    }
}

impl PartialEq for ScrubSet {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.forms(), other.forms());
        ordered(a.patterns.iter().zip(a.window.iter().copied()))
            == ordered(b.patterns.iter().zip(b.window.iter().copied()))
    }
}

/// The patterns of a set, one after another in one buffer. An object set is
/// built for every object in which something was masked, and a vector per
/// form cost an allocation, a copy and a free each (11 forms a value).
#[derive(Clone, Default)]
struct Patterns {
    buf: Vec<u8>,
    /// Where each pattern ends in `buf`; it starts where the one before ends.
    ends: Vec<usize>,
}

impl Patterns {
    fn with_capacity(patterns: usize, bytes: usize) -> Patterns {
        Patterns {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(patterns),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where the next pattern starts (the end of the last one).
    fn next_start(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let start = match i.checked_sub(1) {
            Some(j) => *self.ends.get(j)?,
            None => 0,
        };
        self.buf.get(start..*self.ends.get(i)?)
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.ends.iter().scan(0, |start, &end| {
            let p = self.buf.get(*start..end);
            *start = end;
            p
        })
    }

    fn push(&mut self, p: &[u8]) {
        self.buf.extend_from_slice(p);
        self.ends.push(self.buf.len());
    }
}

impl Eq for ScrubSet {}

/// Size of a naive set's gram filter, in 64-bit words (4096 bits).
const GRAM_WORDS: usize = 64;

/// Size of a token set's byte filter, in 64-bit words (65,536 bits). A
/// token's forms set a few hundred bits: other text hits one at ~0.5 % of
/// the samples, where 4,096 bits were hit at ~8 % (and each hit compares
/// the patterns at `step` offsets). Built once per token, not per object.
const WIDE_GRAM_WORDS: usize = 1024;

/// Bytes in a gram of the filter. Every pattern an object set makes is
/// longer (raw values from [`MIN_SCRUB_BYTES`], encodings from 6 characters).
const GRAM: usize = 4;

/// Largest sampling step of a [`GramFilter`]: each pattern sets `step` bits
/// (at most 4,096), so `step` times the number of patterns must stay far
/// below that: 4 for object sets (a few values, 11 forms each), 16 for a
/// token set (one or two tokens, long forms).
const MAX_GRAM_STEP: usize = 4;
const MAX_TOKEN_GRAM_STEP: usize = 16;
/// From this length on, a token set checks where its filter hits in a
/// string before its automaton searches the string. In a shorter one the
/// search costs about as much as the check (callgrind, the sidecar's list
/// and object GETs).
const VERIFIED_HITS_FROM: usize = 128;

/// The filter bit of the gram `a b c d` in a filter of `1 << bits` bits: a
/// multiplicative hash. Four bytes, not two: JSON text is made of few
/// distinct byte pairs, so a pair filter stopped at most positions; the
/// patterns' four-byte grams rarely occur in other text.
fn gram_bit(a: u8, b: u8, c: u8, d: u8, bits: u32) -> usize {
    (u32::from_le_bytes([a, b, c, d]).wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
}

/// A one-pass filter for the text patterns of a set (an object set's
/// search, a token set's prefilter): which 4-byte grams can lie at the
/// start of a pattern. Every pattern is at least
/// `step + GRAM - 1` bytes long, so an occurrence starting at `s` covers a
/// gram at each of `s .. s + step`, one of which is a multiple of `step`:
/// the filter holds the grams at the first `step` offsets of every pattern,
/// and a text is sampled only at every `step`-th position (a quarter of the
/// work per byte for step 4). Where a sample's bit is set, the patterns are
/// compared at the `step` starts that could have put it there.
///
/// `W` is the size in 64-bit words, a power of two.
#[derive(Clone)]
struct GramFilter<const W: usize = GRAM_WORDS> {
    bits: [u64; W],
    step: usize,
}

impl<const W: usize> GramFilter<W> {
    /// log2 of the number of bits.
    const BITS: u32 = (W * 64).trailing_zeros();

    /// The filter for `patterns`, `None` when one is shorter than a gram.
    fn new<'a>(
        patterns: impl Iterator<Item = &'a [u8]> + Clone,
        max_step: usize,
    ) -> Option<GramFilter<W>> {
        let min = patterns.clone().map(<[u8]>::len).min()?;
        // A pattern shorter than a gram has no gram to set.
        let step = (min.checked_sub(GRAM)? + 1).min(max_step);
        let mut bits = [0u64; W];
        for p in patterns {
            for w in p.windows(GRAM).take(step) {
                if let [a, b, c, d] = *w {
                    let i = gram_bit(a, b, c, d, Self::BITS);
                    bits[i >> 6] |= 1 << (i & 63);
                }
            }
        }
        Some(GramFilter { bits, step })
    }

    /// Whether some pattern for which `starts_at(hay, s)` holds may start
    /// in `hay`; `starts_at` is asked only where the filter hits.
    fn search(&self, hay: &[u8], starts_at: impl Fn(usize) -> bool) -> bool {
        // A plain loop: the iterator chain this replaced (windows, enumerate,
        // step_by, any) compiled to a call per sample, ~30 instructions.
        let Some(last) = hay.len().checked_sub(GRAM) else {
            return false;
        };
        let mut q = 0;
        while q <= last {
            if let Some(&[a, b, c, d]) = hay.get(q..q + GRAM) {
                let i = gram_bit(a, b, c, d, Self::BITS);
                if self.bits[i >> 6] & (1 << (i & 63)) != 0
                    && (q.saturating_sub(self.step - 1)..=q).any(&starts_at)
                {
                    return true;
                }
            }
            q += self.step;
        }
        false
    }
}

/// The pairs of bytes that start a pattern, as 65,536 bits.
#[derive(Clone)]
struct PairSet([u64; 1024]);

impl PairSet {
    fn of<'a>(patterns: impl Iterator<Item = &'a [u8]>) -> PairSet {
        let mut bits = [0u64; 1024];
        for p in patterns {
            if let [a, b, ..] = *p {
                let k = pair_index(a, b);
                bits[k >> 6] |= 1 << (k & 63);
            }
        }
        PairSet(bits)
    }

    /// Whether `h` starts with a pair that starts a pattern. A pattern of
    /// one byte has no pair; a token set's forms are 6 bytes or more
    /// (`MIN_SCRUB_BYTES`, the encodings' minimum), so it has none.
    fn starts(&self, h: &[u8]) -> bool {
        match *h {
            [a, b, ..] => {
                let k = pair_index(a, b);
                self.0[k >> 6] & (1 << (k & 63)) != 0
            }
            _ => false,
        }
    }
}

fn pair_index(a: u8, b: u8) -> usize {
    (usize::from(a) << 8) | usize::from(b)
}

/// `pairs` (pattern, window flag) longest first, for equal lengths in byte
/// order, an equal pattern once with the window flag set if any copy has it.
/// The order the replacements of [`ScrubSet::scrub_str`] rely on: a longer
/// form (a padded encoding, a window of a longer value) is found before a
/// shorter one inside it is replaced.
fn ordered<'a>(pairs: impl Iterator<Item = (&'a [u8], bool)>) -> Vec<(&'a [u8], bool)> {
    let mut v: Vec<(&[u8], bool)> = pairs.collect();
    v.sort_unstable_by(|a, b| {
        b.0.len()
            .cmp(&a.0.len())
            .then_with(|| a.0.cmp(b.0))
            .then_with(|| b.1.cmp(&a.1))
    });
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

fn automaton<'a>(patterns: impl Iterator<Item = &'a [u8]>) -> Option<AhoCorasick> {
    let p: Vec<&[u8]> = patterns.collect();
    if p.is_empty() {
        return None;
    }
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(p)
        .ok()
}

impl ScrubSet {
    /// The set for `values` (each the clear, decoded value) with the default
    /// minimum lengths ([`MIN_SCRUB_BYTES`], [`MIN_ENCODED_SCRUB_BYTES`]),
    /// every form matched whole.
    pub fn new<I, V>(values: I) -> ScrubSet
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let values: Vec<V> = values.into_iter().collect();
        let forms = Forms::new(
            values.iter().map(AsRef::as_ref),
            values.len(),
            usize::MAX,
            false,
        );
        // A prefilter for the text automaton: its own prefilter stops
        // often in JSON text, and a token set is searched in every string of
        // every object.
        let grams = GramFilter::new(
            forms
                .patterns
                .iter()
                .filter(|p| std::str::from_utf8(p).is_ok()),
            MAX_TOKEN_GRAM_STEP,
        );
        let byte_grams = GramFilter::new(forms.patterns.iter(), MAX_TOKEN_GRAM_STEP).map(Box::new);
        let pairs = Some(Box::new(PairSet::of(forms.patterns.iter())));
        ScrubSet {
            empty: forms.patterns.is_empty(),
            min_len: forms.patterns.iter().map(<[u8]>::len).min().unwrap_or(0),
            text_count: 0,
            forms: OnceLock::from(forms),
            heads: Patterns::default(),
            form_starts: Patterns::default(),
            naive: false,
            grams,
            byte_grams,
            pairs,
            bytes: OnceLock::new(),
            text: OnceLock::new(),
        }
    }

    /// The set for the values masked in one object: like [`ScrubSet::new`],
    /// with forms longer than [`WINDOW`] cut to a window (see the module
    /// docs), so building it stays cheap for large values.
    ///
    /// Almost no object holds a form of its masked values anywhere else, so
    /// the forms are made only when a form's first bytes are found: the gram
    /// filter is built from them (`form_heads`), and they depend on the
    /// value's first 8 bytes alone. Making every form
    /// (a base64 encoding of up to 67 bytes at three offsets, each kept in
    /// two alphabets) was ~6,000 instructions a value.
    pub fn for_object<I, V>(values: I) -> ScrubSet
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let values = values.into_iter();
        let n = values.size_hint().0;
        let keep = WINDOW + 4;
        let mut heads = Patterns::with_capacity(n, n * keep);
        for v in values {
            let v = v.as_ref();
            heads.push(v.get(..keep).unwrap_or(v));
        }
        let mut pre = Patterns::with_capacity(n * FORMS_PER_VALUE, n * FORMS_PER_VALUE * 8);
        let (mut min_len, mut text_count) = (usize::MAX, 0);
        for h in heads.iter() {
            let (len, count) = form_heads(h, &mut pre);
            min_len = min_len.min(len);
            text_count += count;
        }
        ScrubSet {
            empty: pre.is_empty(),
            grams: GramFilter::new(pre.iter(), MAX_GRAM_STEP),
            min_len: if pre.is_empty() { 0 } else { min_len },
            text_count,
            form_starts: pre,
            forms: OnceLock::new(),
            heads,
            naive: true,
            byte_grams: None,
            pairs: None,
            bytes: OnceLock::new(),
            text: OnceLock::new(),
        }
    }

    /// The forms, made on first need for an object set.
    fn forms(&self) -> &Forms {
        self.forms
            .get_or_init(|| Forms::new(self.heads.iter(), self.heads.len(), WINDOW, true))
    }

    /// True when there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Number of byte patterns (all forms of all values).
    pub fn pattern_count(&self) -> usize {
        self.forms().patterns.len()
    }

    /// Length of the longest pattern.
    pub fn max_pattern_len(&self) -> usize {
        self.forms().max_len
    }

    fn byte_automaton(&self) -> Option<&AhoCorasick> {
        self.bytes
            .get_or_init(|| automaton(self.forms().patterns.iter()))
            .as_ref()
    }

    fn text_automaton(&self) -> Option<&(AhoCorasick, Vec<bool>)> {
        self.text
            .get_or_init(|| {
                let forms = self.forms();
                let utf8 = || {
                    forms
                        .patterns
                        .iter()
                        .zip(&forms.window)
                        .filter(|(p, _)| std::str::from_utf8(p).is_ok())
                };
                let ac = automaton(utf8().map(|(p, _)| p))?;
                Some((ac, utf8().map(|(_, w)| *w).collect()))
            })
            .as_ref()
    }

    /// The patterns usable on strings (valid UTF-8), with their window flags
    /// (naive sets).
    fn text_patterns(&self) -> impl Iterator<Item = (&[u8], bool)> {
        let forms = self.forms();
        forms.texts.iter().filter_map(|&i| {
            Some((
                forms.patterns.get(i)?,
                forms.window.get(i).copied().unwrap_or(false),
            ))
        })
    }

    /// Naive sets: whether `hay` holds a text pattern, in one sampled pass
    /// of the gram filter; only where it hits are the patterns compared.
    fn holds_text_pattern(&self, hay: &[u8]) -> bool {
        if hay.len() < self.min_len {
            return false;
        }
        let Some(grams) = &self.grams else {
            return self
                .text_patterns()
                .any(|(p, _)| memchr::memmem::find(hay, p).is_some());
        };
        // The first byte inline: most candidates differ there, and
        // `starts_with` is a call to memcmp.
        let at = |h: &[u8], p: &[u8]| h.first() == p.first() && h.starts_with(p);
        grams.search(hay, |i| {
            hay.get(i..).is_some_and(|h| {
                // A form's first bytes first: the filter's 4,096 bits hit
                // somewhere in most objects' text, and the forms are made
                // only past this check.
                self.form_starts.iter().any(|p| at(h, p))
                    && self.text_patterns().any(|(p, _)| at(h, p))
            })
        })
    }

    /// A filter for long texts (the unchanged runs of a JSON unit): false
    /// when no substring of the text holds a pattern [`ScrubSet::matches_str`]
    /// would find.
    pub(crate) fn run_filter(&self) -> RunFilter<'_> {
        RunFilter {
            set: self,
            patterns: self.text_count,
        }
    }

    /// True when `s` holds any form of any value.
    pub fn matches_str(&self, s: &str) -> bool {
        if self.naive {
            return self.holds_text_pattern(s.as_bytes());
        }
        self.text_may_hold(s) && self.text_automaton().is_some_and(|(ac, _)| ac.is_match(s))
    }

    /// Token sets: false when `s` holds no text pattern (then the automaton
    /// need not run): the gram filter shows it, and in a string of
    /// [`VERIFIED_HITS_FROM`] bytes or more the patterns compared where the
    /// filter hits.
    fn text_may_hold(&self, s: &str) -> bool {
        if s.len() < self.min_len {
            return false;
        }
        let Some(grams) = &self.grams else {
            return true;
        };
        let hay = s.as_bytes();
        if hay.len() < VERIFIED_HITS_FROM {
            return grams.search(hay, |_| true);
        }
        // Where the filter hits in a long string, a pattern must start at
        // one of the positions the hit names: compared there. A token's
        // forms set enough of the 4,096 bits that a string of a few hundred
        // bytes hits somewhere more often than not, and the automaton's
        // search that followed cost ~10 instructions a byte of it.
        let forms = self.forms();
        grams.search(hay, |i| {
            hay.get(i..).is_some_and(|h| {
                self.pairs.as_deref().is_none_or(|pairs| pairs.starts(h))
                    && forms
                        .patterns
                        .iter()
                        .any(|p| h.first() == p.first() && h.starts_with(p))
            })
        })
    }

    /// `s` with every occurrence replaced by [`MARKER`]; `None` when `s`
    /// holds none. A string holding a window of a longer value is replaced
    /// whole.
    pub fn scrub_str(&self, s: &str) -> Option<String> {
        if self.naive {
            if !self.holds_text_pattern(s.as_bytes()) {
                return None;
            }
            let mut cur: Option<String> = None;
            for (p, window) in ordered(self.text_patterns()) {
                let Ok(p) = std::str::from_utf8(p) else {
                    continue;
                };
                let hay = cur.as_deref().unwrap_or(s);
                if memchr::memmem::find(hay.as_bytes(), p.as_bytes()).is_some() {
                    if window {
                        return Some(MARKER.to_string());
                    }
                    cur = Some(hay.replace(p, MARKER));
                }
            }
            return cur;
        }
        if !self.text_may_hold(s) {
            return None;
        }
        let (ac, windows) = self.text_automaton()?;
        if !ac.is_match(s) {
            return None;
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for m in ac.find_iter(s) {
            if windows
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(false)
            {
                return Some(MARKER.to_string());
            }
            // Valid UTF-8 patterns match at character boundaries of valid UTF-8.
            out.push_str(s.get(last..m.start())?);
            out.push_str(MARKER);
            last = m.end();
        }
        out.push_str(s.get(last..)?);
        Some(out)
    }

    /// `b` with every occurrence replaced by [`MARKER`]; `None` when `b`
    /// holds none. Bytes holding a window of a longer value are replaced
    /// whole.
    pub fn scrub_bytes(&self, b: &[u8]) -> Option<Vec<u8>> {
        // Header values (the sidecar scrubs every response header) are short
        // and hold no pattern: the length and the byte filter tell, where the
        // automaton's search cost a few hundred instructions a value.
        if b.len() < self.min_len
            || self
                .byte_grams
                .as_ref()
                .is_some_and(|g| !g.search(b, |_| true))
        {
            return None;
        }
        let ac = self.byte_automaton()?;
        if !ac.is_match(b) {
            return None;
        }
        let mut out = Vec::with_capacity(b.len());
        let mut last = 0;
        for m in ac.find_iter(b) {
            if self
                .forms()
                .window
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(false)
            {
                return Some(MARKER.as_bytes().to_vec());
            }
            out.extend_from_slice(&b[last..m.start()]);
            out.extend_from_slice(MARKER.as_bytes());
            last = m.end();
        }
        out.extend_from_slice(&b[last..]);
        Some(out)
    }

    /// Where, in `b`, the longest suffix starts that is a proper prefix of
    /// some pattern (it may still become a match with the next bytes);
    /// `b.len()` when there is none.
    fn partial_tail(&self, b: &[u8]) -> usize {
        let forms = self.forms();
        let from = b.len().saturating_sub(forms.max_len.saturating_sub(1));
        for j in from..b.len() {
            if !forms.first_bytes[usize::from(b[j])] {
                continue;
            }
            let tail = &b[j..];
            // A pattern that starts with the tail starts with its first two
            // bytes when it has two.
            if tail.len() >= 2 && self.pairs.as_deref().is_some_and(|p| !p.starts(tail)) {
                continue;
            }
            // The first byte inline: most patterns differ there, and
            // `starts_with` is a call to memcmp.
            if forms
                .patterns
                .iter()
                .any(|p| p.len() > tail.len() && p.first() == tail.first() && p.starts_with(tail))
            {
                return j;
            }
        }
        b.len()
    }
}

/// See [`ScrubSet::run_filter`]. An object set searches a long text either
/// with its gram pass or once per pattern with memchr's SIMD substring
/// search, whichever costs less for the text's length and the number of
/// patterns. Measured (callgrind, the sidecar's Pod GET): the gram pass
/// ~3.5 instructions a byte (a sample every fourth byte); a one-shot
/// `memmem::find` ~650 to build its searcher and then ~0.8 a byte, per
/// pattern. (An estimate of 300 + 30 per pattern byte and a quarter of an
/// instruction a byte had sent a Pod's runs to four searches each.)
pub(crate) struct RunFilter<'a> {
    set: &'a ScrubSet,
    patterns: usize,
}

impl RunFilter<'_> {
    /// Whether `text` may hold a pattern.
    pub(crate) fn may_match(&self, text: &str) -> bool {
        if !self.set.naive {
            return self.set.matches_str(text);
        }
        if text.len() < self.set.min_len {
            return false;
        }
        let n = text.len();
        if self.patterns * (650 + n * 4 / 5) > n * 7 / 2 {
            return self.set.holds_text_pattern(text.as_bytes());
        }
        self.set
            .text_patterns()
            .any(|(p, _)| memchr::memmem::find(text.as_bytes(), p).is_some())
    }
}

/// Bytes of a form an object set's gram filter reads: the grams at its
/// first [`MAX_GRAM_STEP`] offsets.
const FORM_HEAD: usize = GRAM + MAX_GRAM_STEP - 1;

/// The first [`FORM_HEAD`] bytes of every form [`forms`] makes of `v` in an
/// object set (a value shorter than 8 bytes: its forms whole),
/// appended to `out`: enough for the gram filter. Returns the length of
/// the shortest form and the number of forms (for a longer value, the most
/// `forms` makes).
fn form_heads(v: &[u8], out: &mut Patterns) -> (usize, usize) {
    let whole = |v: &[u8], out: &mut Patterns| {
        let start = out.len();
        forms(v, WINDOW, out, &mut Vec::new());
        let min = (start..out.len())
            .filter_map(|i| out.get(i).map(<[u8]>::len))
            .min()
            .unwrap_or(usize::MAX);
        (min, out.len() - start)
    };
    let (Some(raw), Some(first)) = (v.get(..FORM_HEAD), v.get(..8)) else {
        return whole(v, out);
    };
    // Every form of a value of 8 bytes or more is longer than `FORM_HEAD`:
    // the raw value (the shortest form), its encodings (11 characters or
    // more) and the base64 cores (10 or more).
    out.push(raw);
    // Encoded behind `k` filler bytes, the value's characters start at
    // `ceil(8k / 6)`, and the first `FORM_HEAD` of them hold only bits of
    // its first 8 bytes (for k = 2, characters 3 to 9: bits 18 to 59 of the
    // 10 bytes encoded). k = 0 also gives the encodings' first characters.
    let mut enc = [0u8; 16];
    for k in 0..3usize {
        let from = (8 * k).div_ceil(6);
        let mut buf = [0u8; 10];
        if let Some(b) = buf.get_mut(k..k + 8) {
            b.copy_from_slice(first);
        }
        let encoded = buf
            .get(..k + 8)
            .and_then(|b| STANDARD_NO_PAD.encode_slice(b, &mut enc).ok());
        // Cannot fail (16 bytes hold the encoding of 10); should it, the
        // forms made whole keep the filter exact (the heads pushed already
        // only add grams).
        let Some(p) = encoded
            .filter(|n| *n >= from + FORM_HEAD)
            .and_then(|_| enc.get(from..from + FORM_HEAD))
        else {
            return whole(v, out);
        };
        out.push(p);
        // Not `memchr2`: its setup costs more than 7 bytes.
        if p.iter().any(|&c| c == b'+' || c == b'/') {
            let at = out.next_start();
            out.push(p);
            for c in out.buf.get_mut(at..).unwrap_or_default() {
                *c = url_char(*c);
            }
        }
    }
    // A raw window may end up to 3 bytes short of `WINDOW` (see `raw_window`).
    (v.len().min(WINDOW - 3), FORMS_PER_VALUE)
}

/// Every form of `v` worth matching, appended to `out` with its window
/// flag in `flags`, each once: forms longer than `window` are cut to it
/// (only the first bytes of a long value are encoded, which is all its
/// first `window` characters depend on).
fn forms(v: &[u8], window: usize, out: &mut Patterns, flags: &mut Vec<bool>) {
    let first = out.len();
    // `f` (in the URL-safe alphabet when `url`), unless this value already
    // has that form: an encoding without `+` or `/` is its own URL-safe
    // form, one that needs no padding its own padded form, and an object
    // set (unsorted, see `ScrubSet::patterns`) is not deduplicated later.
    // The form is written at the end of the buffer first and compared
    // there (a slice comparison, not a mapped one), then kept or dropped.
    let mut push = |f: &[u8], url: bool, cut: bool| {
        let cut = cut || f.len() > window;
        let f = f.get(..window).unwrap_or(f);
        // Every URL-safe form is also pushed in the standard alphabet (with
        // the same flag): without `+` or `/` the two are the same form.
        if url && memchr::memchr2(b'+', b'/', f).is_none() {
            return;
        }
        let start = out.next_start();
        out.buf.extend_from_slice(f);
        if url {
            // In place, a loop the compiler vectorises (mapping while
            // extending went a byte at a time).
            for c in out.buf.get_mut(start..).unwrap_or_default() {
                *c = url_char(*c);
            }
        }
        let (done, new) = out.buf.split_at(start);
        let mut prev = first
            .checked_sub(1)
            .and_then(|j| out.ends.get(j))
            .copied()
            .unwrap_or(0);
        for (i, &end) in out.ends.iter().enumerate().skip(first) {
            // The same bytes as a window (the padded encoding of a value
            // just over `window`, cut) and as a whole form: the window flag
            // wins.
            if end - prev == new.len() && done.get(prev..end).is_some_and(|o| same_bytes(o, new)) {
                if let Some(w) = flags.get_mut(i) {
                    *w |= cut;
                }
                out.buf.truncate(start);
                return;
            }
            prev = end;
        }
        out.ends.push(out.buf.len());
        flags.push(cut);
    };
    // Enough bytes for `window` characters of any encoding at any offset.
    let head = window.saturating_add(3);
    let (v, long) = if v.len() > head {
        (&v[..head], true)
    } else {
        (v, false)
    };
    if v.len() >= MIN_SCRUB_BYTES {
        push(raw_window(v, window), false, long || v.len() > window);
    }
    if v.len() < MIN_ENCODED_SCRUB_BYTES {
        return;
    }
    // One encoding per offset, in the standard alphabet without padding;
    // the padded and URL-safe forms differ from it only by the `=` padding
    // and by `-_` for `+/`, so they are derived, not encoded again. (The
    // order of the forms does not matter.)
    let mut enc = Vec::new();
    encode_into(&STANDARD_NO_PAD, v, &mut enc);
    let pad = (4 - enc.len() % 4) % 4;
    let mut padded = Vec::with_capacity(enc.len() + pad);
    padded.extend_from_slice(&enc);
    padded.resize(enc.len() + pad, b'=');
    // The last characters of a cut value's encoding are not its own.
    let cut_to = if long { window } else { usize::MAX };
    let enc_view = enc.get(..cut_to).unwrap_or(&enc);
    let padded_view = padded.get(..cut_to).unwrap_or(&padded);
    for (f, url) in [
        (enc_view, false),
        (padded_view, true),
        (enc_view, true),
        (padded_view, false),
    ] {
        push(f, url, long);
    }
    // Inside longer base64: the value starts at byte offset k (mod 3) of the
    // encoded data. Encode it behind k filler bytes and keep the characters
    // made of the value's bits only (not the first ones, which mix in the
    // filler, nor a last one that would mix in whatever follows).
    let mut buf = Vec::with_capacity(v.len() + 2);
    for k in 0..3usize {
        if k > 0 {
            buf.clear();
            buf.resize(k, 0);
            buf.extend_from_slice(v);
            encode_into(&STANDARD_NO_PAD, &buf, &mut enc);
        }
        let len = v.len() + k;
        let start = (8 * k).div_ceil(6);
        let end = if (8 * len) % 6 == 0 {
            enc.len()
        } else {
            enc.len() - 1
        };
        if end > start && end - start >= MIN_CORE_CHARS {
            push(&enc[start..end], true, long);
            push(&enc[start..end], false, long);
        }
    }
}

/// The first `window` bytes of a raw value longer than that, shortened to
/// the last whole character when the value is UTF-8 text: a window that
/// splits a character is no string's substring, and strings are what an
/// object set searches. A value that fits is kept as it is, even when it
/// ends in part of a character (it is then no text pattern, as before:
/// shortened, it would be a shorter value, scrubbed where it is not one).
fn raw_window(v: &[u8], window: usize) -> &[u8] {
    let Some(w) = v.get(..window).filter(|_| v.len() > window) else {
        return v;
    };
    match std::str::from_utf8(w) {
        // Only an incomplete character at the end (a character the cut
        // split); other invalid bytes mean the value is not text.
        Err(e) if e.error_len().is_none() => w.get(..e.valid_up_to()).unwrap_or(w),
        _ => w,
    }
}

/// `a == b`, eight bytes at a time. A value's forms are often equal (every
/// cut form of a long value is `WINDOW` bytes, several the same), and slice
/// equality is a call to the C library's `memcmp`, which musl (the image's
/// C library) compares a byte at a time: ~150 instructions for 64 equal
/// bytes, about a sixth of that here.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let ((ca, ta), (cb, tb)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    ta == tb
        && ca
            .iter()
            .zip(cb)
            .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
}

/// A standard-alphabet base64 character in the URL-safe alphabet.
fn url_char(c: u8) -> u8 {
    match c {
        b'+' => b'-',
        b'/' => b'_',
        c => c,
    }
}

/// `v` encoded by `engine` into `out` (replacing its content), without the
/// UTF-8 check and the allocation of [`Engine::encode`].
fn encode_into(engine: &base64::engine::GeneralPurpose, v: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(v.len().div_ceil(3) * 4, 0);
    match engine.encode_slice(v, out) {
        Ok(written) => out.truncate(written),
        // Cannot happen (the buffer fits any encoding of `v`).
        Err(_) => *out = engine.encode(v).into_bytes(),
    }
}

/// Applies a [`ScrubSet`] to a byte stream (see the module docs).
pub struct StreamScrubber {
    set: std::sync::Arc<ScrubSet>,
    held: Vec<u8>,
    count: usize,
}

impl fmt::Debug for StreamScrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamScrubber")
            .field("held", &self.held.len())
            .field("count", &self.count)
            .finish()
    }
}

impl StreamScrubber {
    /// A scrubber for one body.
    pub fn new(set: std::sync::Arc<ScrubSet>) -> StreamScrubber {
        StreamScrubber {
            set,
            held: Vec::new(),
            count: 0,
        }
    }

    /// Occurrences replaced so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes held back (a possible start of a match).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Feed the next chunk; returns the bytes that are ready. Borrowed
    /// bytes are a prefix of `chunk` (the rest is held back).
    pub fn push<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        if self.set.is_empty() {
            return Cow::Borrowed(chunk);
        }
        if self.held.is_empty() {
            if !self.could_match(chunk) {
                return Cow::Borrowed(chunk);
            }
            // Almost every chunk holds no match: all but the held-back tail
            // goes on as it is, not copied.
            let (out, hold_from) = self.scan(chunk, false);
            self.held = chunk[hold_from..].to_vec();
            return out.map_or(Cow::Borrowed(&chunk[..hold_from]), Cow::Owned);
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let (out, hold_from) = self.scan(&buf, false);
        self.held = buf.split_off(hold_from);
        Cow::Owned(out.unwrap_or(buf))
    }

    /// The body ended: the held-back bytes, scrubbed.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.held);
        self.scan(&buf, true).0.unwrap_or(buf)
    }

    /// Cheap pre-check: no pattern's first byte in `chunk` means no match
    /// starts in it (only whole chunks, so the common case is one memchr-like
    /// pass).
    fn could_match(&self, chunk: &[u8]) -> bool {
        let first = &self.set.forms().first_bytes;
        chunk.iter().any(|b| first[usize::from(*b)])
    }

    /// Scrub `buf` up to where bytes must be held back (a match near the
    /// end could still grow, or the tail could start one; nothing at
    /// `eof`): the scrubbed bytes, or `None` when nothing matched and
    /// `buf[..hold_from]` goes on unchanged; and `hold_from`.
    fn scan(&mut self, buf: &[u8], eof: bool) -> (Option<Vec<u8>>, usize) {
        let set = self.set.clone();
        // No pattern lies wholly in `buf`: the automaton would find nothing
        // (and only a possible start at the end is held back).
        if let Some(g) = &set.byte_grams
            && !g.search(buf, |at| {
                buf.get(at..).is_some_and(|h| {
                    set.forms()
                        .patterns
                        .iter()
                        .any(|p| h.first() == p.first() && h.starts_with(p))
                })
            })
        {
            let hold_from = if eof {
                buf.len()
            } else {
                set.partial_tail(buf)
            };
            return (None, hold_from);
        }
        let Some(ac) = set.byte_automaton() else {
            return (None, buf.len());
        };
        let guard = self.set.forms().max_len.saturating_sub(1);
        let mut out: Option<Vec<u8>> = None;
        let mut last = 0;
        let mut hold_from = buf.len();
        for m in ac.find_iter(buf) {
            // A match close to the end might still grow into a longer one.
            if !eof && m.end() + guard > buf.len() {
                hold_from = m.start();
                break;
            }
            let o = out.get_or_insert_with(|| Vec::with_capacity(buf.len()));
            o.extend_from_slice(&buf[last..m.start()]);
            o.extend_from_slice(MARKER.as_bytes());
            self.count += 1;
            last = m.end();
        }
        if !eof && hold_from == buf.len() {
            hold_from = last + self.set.partial_tail(&buf[last..]);
        }
        if let Some(o) = &mut out {
            o.extend_from_slice(&buf[last..hold_from]);
        }
        (out, hold_from)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpzaWRlY2FyIn0.c2lnbmF0dXJlLXJlYWwtdG9rZW4";

    fn all_encodings(v: &str) -> Vec<String> {
        [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .map(|e| e.encode(v))
            .collect()
    }

    #[test]
    fn raw_encoded_and_embedded_forms_are_found() {
        let set = ScrubSet::new([TOKEN]);
        assert!(!set.is_empty());
        let mut inputs = vec![format!("Authorization: Bearer {TOKEN}\n")];
        for e in all_encodings(TOKEN) {
            inputs.push(format!("x {e} y"));
        }
        for prefix in ["", "a", "ab", "abc", "Bearer "] {
            inputs.push(STANDARD.encode(format!("{prefix}{TOKEN} tail")));
            inputs.push(URL_SAFE_NO_PAD.encode(format!("{prefix}{TOKEN}")));
        }
        for input in inputs {
            let out = set.scrub_str(&input).unwrap_or_else(|| panic!("{input}"));
            // The bytes of a header value: the same (past the byte filter).
            let bytes = set
                .scrub_bytes(input.as_bytes())
                .unwrap_or_else(|| panic!("{input}"));
            for out in [out, String::from_utf8(bytes).unwrap()] {
                assert!(out.contains(MARKER), "{out}");
                assert!(!out.contains(TOKEN), "{out}");
                for e in all_encodings(TOKEN) {
                    assert!(!out.contains(&e), "{out}");
                }
            }
        }
        assert_eq!(set.scrub_str("nothing here"), None);
        assert_eq!(set.scrub_bytes(b"nothing here"), None);
        assert_eq!(set.scrub_bytes(b""), None);
        assert_eq!(set.scrub_bytes(&[b'.'; 300]), None);
    }

    #[test]
    fn short_values_are_not_scrubbed_raw() {
        let set = ScrubSet::new(["admin", "abc"]);
        assert_eq!(set.scrub_str("admin user"), None);
        // The exact base64 of a 4+ byte value is.
        assert!(set.scrub_str("YWRtaW4=").is_some());
        assert!(ScrubSet::new(["ab"]).is_empty());
        assert!(format!("{set:?}").contains("patterns"));
        assert!(!format!("{set:?}").contains("admin"));
    }

    #[test]
    fn object_sets_match_long_values_by_a_window_and_replace_the_string() {
        let long = "L".repeat(10) + &"0123456789abcdef".repeat(40);
        let set = ScrubSet::for_object([long.as_str()]);
        assert!(set.max_pattern_len() <= WINDOW);
        let copy = format!("copied: {long} (end)");
        assert_eq!(set.scrub_str(&copy).as_deref(), Some(MARKER));
        let b64 = STANDARD.encode(format!("xy{long}"));
        assert_eq!(set.scrub_str(&b64).as_deref(), Some(MARKER));
        // Short values are still replaced in place.
        let set = ScrubSet::for_object(["short-pw-1"]);
        assert_eq!(
            set.scrub_str("a short-pw-1 b").as_deref(),
            Some("a ***MASKED*** b")
        );
    }

    #[test]
    fn object_sets_make_their_forms_only_when_the_filter_hits() {
        let v = "a-long-secret-value-".repeat(4);
        let set = ScrubSet::for_object([v.as_str(), "short-pw", "abcd"]);
        assert!(!set.is_empty());
        assert!(set.forms.get().is_none());
        assert_eq!(
            set.scrub_str("metadata: none of them here, only text"),
            None
        );
        assert!(!set.matches_str("app.kubernetes.io/name"));
        assert!(set.forms.get().is_none(), "made without a hit");
        assert_eq!(set.scrub_str(&format!("x {v} y")).as_deref(), Some(MARKER));
        assert!(set.forms.get().is_some());
        // Values too short for any form: nothing to make, ever.
        let set = ScrubSet::for_object(["abc", ""]);
        assert!(set.is_empty());
        assert_eq!(set.scrub_str("abc abc"), None);
    }

    #[test]
    fn object_sets_scrub_long_values_of_multibyte_characters() {
        // The window of a long value is cut at a character boundary: cut
        // at byte 64 it would split a character, no string could hold it,
        // and the value copied raw would stay.
        for c in ["\u{e9}", "\u{20ac}", "\u{1f511}"] {
            // Every offset of the character against byte 64.
            for pre in ["", "a", "ab", "abc"] {
                let long = format!("{pre}{}", c.repeat(40));
                let set = ScrubSet::for_object([long.as_str()]);
                let copy = format!("copied: {long} (end)");
                assert_eq!(set.scrub_str(&copy).as_deref(), Some(MARKER), "{pre}{c}");
                assert!(set.matches_str(&copy));
            }
        }
    }

    #[test]
    fn values_ending_in_part_of_a_character_are_not_shortened() {
        // Decoded Secret data can end anywhere in a character: such a value
        // is no text, and no shorter text may stand for it.
        for v in [&b"abc\xf0\x9f\x94"[..], b"abcdefg\xc3", b"abcdefgh\xe2\x82"] {
            let text = "abc abcdefg abcdefgh";
            assert_eq!(ScrubSet::for_object([v]).scrub_str(text), None, "{v:?}");
            assert_eq!(ScrubSet::new([v]).scrub_str(text), None, "{v:?}");
        }
    }

    #[test]
    fn object_sets_replace_longest_first_whatever_the_order_of_the_values() {
        // An object set keeps its forms unsorted; a long value whose window
        // holds a shorter value must still replace the string whole, and
        // the padded encoding must win over the unpadded one inside it.
        let short = "password-1";
        let long = format!("{short}{}", "x".repeat(100));
        for values in [[short, long.as_str()], [long.as_str(), short]] {
            let set = ScrubSet::for_object(values);
            assert_eq!(set.scrub_str(&long).as_deref(), Some(MARKER));
            assert_eq!(
                set.scrub_str(&format!("a {short} b")).as_deref(),
                Some("a ***MASKED*** b")
            );
            let padded = STANDARD.encode(short);
            assert!(padded.ends_with('='));
            assert_eq!(
                set.scrub_str(&format!("<{padded}>")).as_deref(),
                Some("<***MASKED***>")
            );
        }
        let a = ScrubSet::for_object([short, long.as_str()]);
        let b = ScrubSet::for_object([long.as_str(), short, short]);
        assert_eq!(a, b);
        assert_ne!(a, ScrubSet::for_object([short]));
    }

    #[test]
    fn gram_filters_find_every_pattern_at_every_offset() {
        let patterns: [&[u8]; 3] = [b"abcdef", b"0123456789", b"xyzw-long-pattern"];
        for max_step in [1, MAX_GRAM_STEP, MAX_TOKEN_GRAM_STEP] {
            let g = GramFilter::<GRAM_WORDS>::new(patterns.iter().copied(), max_step).unwrap();
            // Shortest pattern 6 bytes: at most 3 positions per sample.
            assert_eq!(g.step, 3.min(max_step));
            for p in patterns {
                for pre in 0..8 {
                    let hay = [vec![b'.'; pre], p.to_vec(), vec![b'.'; 2]].concat();
                    let found = g.search(&hay, |at| hay[at..].starts_with(p));
                    assert!(found, "step {} offset {pre}", g.step);
                }
            }
            assert!(!g.search(b"......................", |_| true));
        }
        // The wide filter (token sets' byte scan) finds them the same way.
        let g = GramFilter::<WIDE_GRAM_WORDS>::new(patterns.iter().copied(), MAX_TOKEN_GRAM_STEP)
            .unwrap();
        for p in patterns {
            for pre in 0..20 {
                let hay = [vec![b'.'; pre], p.to_vec()].concat();
                assert!(
                    g.search(&hay, |at| hay[at..].starts_with(p)),
                    "offset {pre}"
                );
            }
        }
        assert!(!g.search(b"......................", |_| true));
        // A pattern shorter than a gram: no filter (every pattern is searched).
        assert!(
            GramFilter::<GRAM_WORDS>::new([&b"abc"[..], &b"abcdef"[..]].into_iter(), 4).is_none()
        );
        assert!(GramFilter::<GRAM_WORDS>::new(std::iter::empty::<&[u8]>(), 4).is_none());
    }

    #[test]
    fn stream_scrubber_catches_values_straddling_chunks() {
        let set = Arc::new(ScrubSet::new([TOKEN]));
        let enc = STANDARD.encode(TOKEN);
        let body = format!("head {TOKEN} middle {enc} and {TOKEN}");
        let want = set.scrub_str(&body).unwrap();
        for chunk in [1, 2, 3, 7, 64, 100, body.len()] {
            let mut s = StreamScrubber::new(set.clone());
            let mut out = Vec::new();
            for piece in body.as_bytes().chunks(chunk) {
                out.extend_from_slice(&s.push(piece));
                assert!(s.held() < set.max_pattern_len() * 2, "held {}", s.held());
            }
            out.extend(s.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "chunk {chunk}");
            assert_eq!(s.count(), 3);
        }
    }

    proptest::proptest! {
        /// Any text made of the token, its encoding, their starts and
        /// filler comes out of the stream scrubber as `scrub_str` rewrites
        /// it whole, whatever the chunk sizes.
        #[test]
        fn stream_scrubber_equals_scrub_str_whatever_the_chunks(
            parts in proptest::collection::vec(0usize..10, 0..12),
            sizes in proptest::collection::vec(1usize..80, 1..8),
        ) {
            let set = Arc::new(ScrubSet::new([TOKEN]));
            proptest::prop_assert!(set.byte_grams.is_some());
            // The same set without the byte scan's gram filter: the
            // automaton alone decides.
            let mut plain = (*set).clone();
            plain.byte_grams = None;
            let plain = Arc::new(plain);
            let enc = STANDARD.encode(TOKEN);
            let url = URL_SAFE_NO_PAD.encode(TOKEN);
            // Inside longer base64, at each offset mod 3.
            let inner1 = STANDARD.encode(format!("a{TOKEN}b"));
            let inner2 = URL_SAFE_NO_PAD.encode(format!("ab{TOKEN}"));
            let pieces = [
                TOKEN,
                enc.as_str(),
                &TOKEN[..10],
                &enc[..12],
                " x ",
                "e",
                url.as_str(),
                inner1.as_str(),
                inner2.as_str(),
                &url[..30],
            ];
            let body: String = parts.iter().map(|&i| pieces[i % pieces.len()]).collect();
            let want = set.scrub_str(&body).unwrap_or_else(|| body.clone());
            let run = |set: &Arc<ScrubSet>| {
                let mut s = StreamScrubber::new(set.clone());
                let mut out = Vec::new();
                let mut rest = body.as_bytes();
                for n in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (piece, tail) = rest.split_at((*n).min(rest.len()));
                    out.extend_from_slice(&s.push(piece));
                    rest = tail;
                }
                out.extend(s.finish());
                (String::from_utf8(out).unwrap(), s.count())
            };
            let (out, count) = run(&set);
            proptest::prop_assert_eq!(&out, &want);
            proptest::prop_assert_eq!((out, count), run(&plain));
        }
    }

    #[test]
    fn stream_scrubber_does_not_delay_ordinary_bytes() {
        let set = Arc::new(ScrubSet::new([TOKEN]));
        let mut s = StreamScrubber::new(set);
        let ev = b"{\"type\":\"ADDED\",\"object\":{}}\n";
        assert_eq!(s.push(ev).as_ref(), &ev[..]);
        assert_eq!(s.held(), 0);
        // A possible start of the token is held until it is decided.
        let out = s.push(b"abc eyJhbG");
        assert_eq!(out.as_ref(), b"abc ");
        assert_eq!(s.held(), 6);
        let out = s.push(b"ci! done\n");
        assert_eq!(out.as_ref(), b"eyJhbGci! done\n");
        assert_eq!(s.finish(), b"");
    }

    /// The forms as first written: every encoding made by its own engine.
    fn reference_forms(v: &[u8], window: usize, out: &mut Vec<(Vec<u8>, bool)>) {
        let mut push = |f: Vec<u8>, cut: bool| {
            let cut = cut || f.len() > window;
            let mut f = f;
            f.truncate(window);
            out.push((f, cut));
        };
        let head = window.saturating_add(3);
        let (v, long) = if v.len() > head {
            (&v[..head], true)
        } else {
            (v, false)
        };
        if v.len() >= MIN_SCRUB_BYTES {
            // A longer value cut at a character boundary when it is text.
            let mut cut = v.len().min(window);
            if v.len() > window
                && let Err(e) = std::str::from_utf8(&v[..cut])
                && e.error_len().is_none()
            {
                cut = e.valid_up_to();
            }
            push(v[..cut].to_vec(), long || v.len() > window);
        }
        if v.len() < MIN_ENCODED_SCRUB_BYTES {
            return;
        }
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let mut f = engine.encode(v).into_bytes();
            if long {
                f.truncate(window);
            }
            push(f, long);
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            for k in 0..3usize {
                let mut buf = vec![0; k];
                buf.extend_from_slice(v);
                let enc = engine.encode(&buf).into_bytes();
                let start = (8 * k).div_ceil(6);
                let end = if (8 * buf.len()) % 6 == 0 {
                    enc.len()
                } else {
                    enc.len() - 1
                };
                if end > start && end - start >= MIN_CORE_CHARS {
                    push(enc[start..end].to_vec(), long);
                }
            }
        }
    }

    /// `same_bytes` is slice equality: every length to 40, a difference at
    /// every position (in the eight-byte chunks and in the tail).
    #[test]
    fn same_bytes_is_slice_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            assert!(same_bytes(&a, &a.clone()));
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!same_bytes(&a, &b), "len {n}, differing at {at}");
            }
        }
    }

    proptest::proptest! {
        /// The derived forms are exactly the ones every engine encodes, each once.
        #[test]
        fn forms_equal_the_encoded_ones(
            v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
            window in proptest::prop_oneof![proptest::strategy::Just(WINDOW), proptest::strategy::Just(usize::MAX), 8usize..80],
        ) {
            let (mut flat, mut flags, mut want) = (Patterns::default(), Vec::new(), Vec::new());
            // Behind another value's forms, as in a set of several.
            forms(b"other-value", window, &mut flat, &mut flags);
            let skip = flat.len();
            forms(&v, window, &mut flat, &mut flags);
            let mut got: Vec<(Vec<u8>, bool)> =
                flat.iter().map(<[u8]>::to_vec).zip(flags).skip(skip).collect();
            reference_forms(&v, window, &mut want);
            // As a set: each form once, with the window flag if any copy of
            // it has one (what `ScrubSet` made of the reference's copies).
            let set = |v: &mut Vec<(Vec<u8>, bool)>| {
                v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
                v.dedup_by(|a, b| a.0 == b.0);
            };
            let n = got.len();
            set(&mut got);
            proptest::prop_assert_eq!(got.len(), n);
            set(&mut want);
            proptest::prop_assert_eq!(got, want);
        }

        /// An object set's filter, made from the first bytes of the forms
        /// (and the forms themselves made only on a hit), finds every text
        /// form of every value at every offset, and the set is empty
        /// exactly when no value has a form.
        #[test]
        fn object_set_filter_from_form_heads_finds_every_form(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
                    proptest::strategy::Strategy::prop_map(
                        "[a-z0-9+/\u{e9}\u{20ac}-]{0,90}",
                        String::into_bytes,
                    ),
                ],
                1..4,
            ),
            pre in 0usize..8,
            tail in proptest::prelude::any::<bool>(),
        ) {
            let reference =
                Forms::new(values.iter().map(Vec::as_slice), values.len(), WINDOW, true);
            let set = ScrubSet::for_object(&values);
            proptest::prop_assert_eq!(set.is_empty(), reference.patterns.is_empty());
            for i in &reference.texts {
                let p = std::str::from_utf8(reference.patterns.get(*i).unwrap()).unwrap();
                let hay = format!("{}{p}{}", ".".repeat(pre), if tail { ".." } else { "" });
                proptest::prop_assert!(set.matches_str(&hay), "{:?} in {:?}", p, hay);
                proptest::prop_assert!(set.scrub_str(&hay).is_some());
            }
        }

        /// The one-pass search of object sets (gram filter, then the
        /// patterns compared where a pair's bit is set) finds exactly what a
        /// plain substring search of every text pattern finds.
        #[test]
        fn object_set_search_is_a_substring_search(
            values in proptest::collection::vec("[a-zA-Z0-9+/=_-]{4,20}", 1..4),
            hay in "[a-zA-Z0-9+/=_ -]{0,60}",
            embed in proptest::option::of((0usize..3, 0usize..60)),
        ) {
            let set = ScrubSet::for_object(&values);
            let mut hay = hay;
            if let Some((which, at)) = embed {
                let forms: Vec<&str> = set
                    .text_patterns()
                    .map(|(p, _)| std::str::from_utf8(p).unwrap())
                    .collect();
                if let Some(p) = forms.get(which % forms.len().max(1)) {
                    let at = at.min(hay.len());
                    hay.insert_str(at, p);
                }
            }
            let want = set
                .text_patterns()
                .any(|(p, _)| hay.contains(std::str::from_utf8(p).unwrap()));
            proptest::prop_assert_eq!(set.matches_str(&hay), want);
            proptest::prop_assert_eq!(set.scrub_str(&hay).is_some(), want);
        }

        /// A token set (gram filter, the patterns compared where it hits,
        /// then the automaton) finds exactly what a plain substring search
        /// of its text patterns finds, and replaces every occurrence, in
        /// text long enough for the filter to hit by chance.
        #[test]
        fn token_set_search_is_a_substring_search(
            tokens in proptest::collection::vec("[a-zA-Z0-9._-]{20,60}", 1..3),
            hay in "[a-zA-Z0-9+/=_. -]{0,600}",
            embed in proptest::option::of((0usize..24, 0usize..600)),
        ) {
            let set = ScrubSet::new(&tokens);
            let texts: Vec<String> = set
                .forms()
                .patterns
                .iter()
                .filter_map(|p| std::str::from_utf8(p).ok().map(str::to_owned))
                .collect();
            let mut hay = hay;
            if let Some((which, at)) = embed
                && let Some(p) = texts.get(which % texts.len().max(1))
            {
                let at = at.min(hay.len());
                hay.insert_str(at, p);
            }
            let want = texts.iter().any(|p| hay.contains(p.as_str()));
            proptest::prop_assert_eq!(set.matches_str(&hay), want);
            let scrubbed = set.scrub_str(&hay);
            proptest::prop_assert_eq!(scrubbed.is_some(), want);
            if let Some(out) = scrubbed {
                for t in &tokens {
                    proptest::prop_assert!(!out.contains(t.as_str()), "{:?} left in {:?}", t, out);
                }
            }
        }
    }
}
