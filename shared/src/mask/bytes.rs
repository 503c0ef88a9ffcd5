//! Byte-level masking of one scrub unit (a single object, a list item, a
//! watch event and its object) without building a `serde_json::Value` tree.
//!
//! The unit's bytes are read once by a strict JSON tokenizer that knows the
//! path of every value; the rules are decided from the paths (field paths
//! as a small automaton over the path, the data-map key regex, the env-name
//! regex decided when an env entry ends, since its `name` may follow its
//! `value`), the detectors run on the strings as they are, the last-applied
//! annotation and the object scrub follow, all in the order and with the
//! counting of the tree engine (`engine.rs`), which stays the reference.
//! The output is the input with splices where values changed.
//!
//! Whatever this path cannot prove it does as the tree engine does is handed
//! back ([`Masker::mask_bytes`] returns `None`) and the caller uses the tree
//! engine: invalid or odd JSON (so the tree engine reports the error),
//! duplicate keys, numbers outside a safe form, deep nesting, Tables, lists,
//! `PartialObjectMetadata`, a watch event with a `kind` or without an object,
//! an object key that a scrub set matches. A fallback costs time; a wrong
//! decision would leak a secret.
//!
//! Prefilters: the detectors' regex set and the scrub sets are run once over
//! the runs of input bytes that are copied unchanged (between values already
//! changed), not once per string. A string without escapes is the same text
//! inside the input, and the detectors' patterns only use ASCII word
//! boundaries (true at the quotes as at the ends of a string) and `\z` after
//! a lazy `(?s:.*?)` (which reaches the end of the run), so a run with no
//! match holds no string with one. Strings with escapes and changed strings
//! are always checked one by one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use std::borrow::Cow;

use super::engine::{
    CONTAINER_LISTS, IDENTITY_METADATA, KEYED_MAPS, remember, skeleton_from, use_base64,
};
use super::scrub::ScrubSet;
use super::{
    CompiledRule, LAST_APPLIED_ANNOTATION, MARKER, MARKER_BASE64, MaskContext, Masker, Seg,
};

/// Deeper nesting is left to the tree engine (serde_json refuses depth 128).
const MAX_DEPTH: u16 = 100;
/// Longest digit runs of a number read here: far from overflowing an f64,
/// which serde_json refuses.
const MAX_DIGITS: usize = 200;
const MAX_EXP_DIGITS: usize = 2;
/// More rules than bits in the per-value rule mask: tree engine.
const MAX_RULES: usize = 64;
const NONE: u32 = u32::MAX;

/// What the bytes handed to [`Masker::mask_bytes`] are.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape<'a> {
    /// A whole document that is a single object (not a list or Table).
    Document,
    /// One element of a streamed list's `items`, with the list's kind.
    Item { list_kind: Option<&'a str> },
    /// One watch event (`type` and `object`).
    Event,
}

/// The byte path cannot decide this input: use the tree engine.
struct Fallback;

type R<T> = Result<T, Fallback>;

/// The top-level member of the unit a value sits under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Root,
    ApiVersion,
    Kind,
    Metadata,
    Data,
    BinaryData,
    Other,
}

impl Top {
    fn of(key: &str) -> Top {
        match key {
            "apiVersion" => Top::ApiVersion,
            "kind" => Top::Kind,
            "metadata" => Top::Metadata,
            "data" => Top::Data,
            "binaryData" => Top::BinaryData,
            _ => Top::Other,
        }
    }

    fn base64(self, is_secret: bool) -> bool {
        match self {
            Top::Data => use_base64("data", is_secret),
            Top::BinaryData => use_base64("binaryData", is_secret),
            _ => false,
        }
    }
}

/// Values the skeleton of the last-applied annotation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    ApiVersion,
    Kind,
    Name,
    Namespace,
    Annotation,
}

/// Where a value is on the way to an env entry (see `engine::mask_env`):
/// a node of the trie of pod spec paths, a container list, a container,
/// its `env`, an entry, the entry's `value` (all of it) or `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Env {
    No,
    Trie(u8),
    ContainerList,
    Container,
    EntryList,
    Entry(u32),
    Value(u32),
    Name(u32),
}

/// The trie of `engine::POD_SPEC_PATHS`: (node, key) → node. Nodes 1, 3, 7
/// and 9 are pod specs.
const SPEC_TRIE: [(u8, &str, u8); 9] = [
    (0, "spec", 1),
    (0, "template", 8),
    (1, "template", 2),
    (2, "spec", 3),
    (1, "jobTemplate", 4),
    (4, "spec", 5),
    (5, "template", 6),
    (6, "spec", 7),
    (8, "spec", 9),
];
const SPEC_NODES: [u8; 4] = [1, 3, 7, 9];

/// Text of a string: a range of the input (no escapes) or a decoded copy.
#[derive(Debug, Clone, Copy)]
enum Text {
    Raw(u32, u32),
    Dec(u32),
}

/// Where a value (or an object whose keys are recorded) is in the unit.
#[derive(Debug, Clone, Copy)]
struct Loc {
    /// Outside the unit: a watch event's members other than `object`.
    wrapper: bool,
    top: Top,
    /// Length of the path from the unit's root.
    depth: u16,
    /// The second step of the path is a key (the top member is an object).
    second_key: bool,
    /// ... and it is an identity field of `metadata`.
    second_identity: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    EventRoot,
    UnitRoot,
    Metadata,
    Annotations,
}

/// A string or (possibly masked) number value.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    start: u32,
    end: u32,
    num: bool,
    esc: bool,
    text: Text,
    loc: Loc,
    /// Rules (bits) whose field paths cover this value.
    rules: u64,
    /// The data-map member it is under, if any.
    keyed: u32,
    /// The env entry whose `value` it is under, if any.
    env: u32,
    special: Special,
}

/// An object key; `loc` is the object's.
#[derive(Debug, Clone, Copy)]
struct Key {
    start: u32,
    esc: bool,
    text: Text,
    loc: Loc,
}

/// The value about to be read.
#[derive(Debug, Clone, Copy)]
struct Here {
    loc: Loc,
    role: Role,
    special: Special,
    rules: u64,
    /// Field-path automaton states alive here: a range of `Scratch::states`.
    states: (u32, u32),
    keyed: u32,
    keyed_map: bool,
    env: Env,
}

/// Buffers reused from unit to unit.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    leaves: Vec<Leaf>,
    keys: Vec<Key>,
    decoded: Vec<String>,
    keyed: Vec<Text>,
    entries: Vec<Option<Text>>,
    /// (rule, path, position of the next segment).
    states: Vec<(u16, u16, u16)>,
    /// Keys of the objects being read, with a cheap signature each.
    seen: Vec<(u64, Text)>,
    cur: Vec<Option<String>>,
}

thread_local! {
    /// The working vectors of the byte path, one set per thread. A masking
    /// call runs to its end without yielding, so no two calls share a set,
    /// and a stream waiting between units (a quiet watch) holds none: a set
    /// per stream cost every open watch a few KiB for its life.
    pub(super) static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Run `f` with this thread's scratch (a fresh one if it is in use, which a
/// masking call never leaves it).
pub(crate) fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => {
            let v = f(&mut sc);
            // One huge object must not leave its working set with the
            // thread for good: keep what ordinary objects need.
            if sc.entries_kept() > SCRATCH_KEPT {
                *sc = Scratch::default();
            }
            v
        }
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Entries (values, keys, changed values) a thread's scratch may keep
/// between units; a Pod has a few hundred.
pub(super) const SCRATCH_KEPT: usize = 16_384;

impl Scratch {
    /// Room for values, keys and changed values it holds on to.
    pub(super) fn entries_kept(&self) -> usize {
        self.leaves.capacity() + self.keys.capacity() + self.cur.capacity()
    }

    fn clear(&mut self) {
        self.leaves.clear();
        self.keys.clear();
        self.decoded.clear();
        self.keyed.clear();
        self.entries.clear();
        self.states.clear();
        self.seen.clear();
        self.cur.clear();
    }

    fn text<'a>(&'a self, s: &'a str, t: Text) -> &'a str {
        match t {
            Text::Raw(a, b) => s.get(a as usize..b as usize).unwrap_or(""),
            Text::Dec(i) => self.decoded.get(i as usize).map_or("", String::as_str),
        }
    }
}

/// What the tokenizer learned about the unit.
#[derive(Debug, Default, Clone, Copy)]
struct Unit {
    kind: Option<Text>,
    items_array: bool,
    has_object: bool,
    type_string: bool,
}

struct Parser<'a, 'r> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
    sc: &'r mut Scratch,
    rules: &'r [CompiledRule],
    unit: Unit,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Parser<'a, '_> {
    fn ws(&mut self) {
        while self.b.get(self.i).copied().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    fn run(&mut self, shape: Shape<'_>) -> R<()> {
        self.ws();
        if self.peek() != Some(b'{') {
            return Err(Fallback);
        }
        let root = match shape {
            Shape::Event => Here {
                loc: Loc {
                    wrapper: true,
                    top: Top::Root,
                    depth: 0,
                    second_key: false,
                    second_identity: false,
                },
                role: Role::EventRoot,
                special: Special::None,
                rules: 0,
                states: (0, 0),
                keyed: NONE,
                keyed_map: false,
                env: Env::No,
            },
            _ => self.unit_root(),
        };
        self.value(root)?;
        self.ws();
        if self.i != self.b.len() {
            return Err(Fallback);
        }
        Ok(())
    }

    fn unit_root(&mut self) -> Here {
        let from = self.sc.states.len() as u32;
        for (r, rule) in self.rules.iter().enumerate() {
            for p in 0..rule.fields.len() {
                self.sc.states.push((r as u16, p as u16, 0));
            }
        }
        self.unit.has_object = true;
        Here {
            loc: Loc {
                wrapper: false,
                top: Top::Root,
                depth: 0,
                second_key: false,
                second_identity: false,
            },
            role: Role::UnitRoot,
            special: Special::None,
            rules: 0,
            states: (from, self.sc.states.len() as u32),
            keyed: NONE,
            keyed_map: false,
            env: Env::Trie(0),
        }
    }

    fn value(&mut self, h: Here) -> R<()> {
        if h.loc.depth > MAX_DEPTH {
            return Err(Fallback);
        }
        match self.peek() {
            Some(b'{') => self.object(h),
            Some(b'[') => self.array(h),
            _ => self.scalar(&h),
        }
    }

    /// A member's or element's value: a container recurses into
    /// [`Parser::value`], a scalar (most values) is read in the caller's
    /// frame. The recursive call's entry and exit held a large share of the
    /// parser's `perf` samples (a large frame saved and restored per value);
    /// in instructions the change is small (results.md, "Eleventh pass").
    #[inline(always)]
    fn child(&mut self, h: Here) -> R<()> {
        match self.peek() {
            Some(b'{' | b'[') => self.value(h),
            _ if h.loc.depth > MAX_DEPTH => Err(Fallback),
            _ => self.scalar(&h),
        }
    }

    /// A string, number or literal at `self.i`, recorded as `value` did.
    #[inline(always)]
    fn scalar(&mut self, h: &Here) -> R<()> {
        match self.peek() {
            Some(b'"') => {
                let (start, end, esc, text) = self.string()?;
                if let Env::Name(id) = h.env
                    && let Some(e) = self.sc.entries.get_mut(id as usize)
                {
                    *e = Some(text);
                }
                if h.special == Special::Kind {
                    self.unit.kind = Some(text);
                }
                self.sc.leaves.push(Leaf {
                    start,
                    end,
                    num: false,
                    esc,
                    text,
                    loc: h.loc,
                    rules: h.rules,
                    keyed: h.keyed,
                    env: env_value(h.env),
                    special: h.special,
                });
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let (start, end) = self.number()?;
                if h.rules != 0 || h.keyed != NONE || env_value(h.env) != NONE {
                    self.sc.leaves.push(Leaf {
                        start,
                        end,
                        num: true,
                        esc: false,
                        text: Text::Raw(start, end),
                        loc: h.loc,
                        rules: h.rules,
                        keyed: h.keyed,
                        env: env_value(h.env),
                        special: Special::None,
                    });
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(Fallback),
        }
    }

    fn literal(&mut self, lit: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` with bounded digit
    /// runs; what follows is checked by the container.
    fn number(&mut self) -> R<(u32, u32)> {
        let start = self.i;
        let mut j = start;
        let digits = |j: &mut usize| {
            let from = *j;
            while self.b.get(*j).is_some_and(u8::is_ascii_digit) {
                *j += 1;
            }
            *j - from
        };
        if self.b.get(j) == Some(&b'-') {
            j += 1;
        }
        match self.b.get(j) {
            Some(b'0') => j += 1,
            Some(b'1'..=b'9') => {
                if digits(&mut j) > MAX_DIGITS {
                    return Err(Fallback);
                }
            }
            _ => return Err(Fallback),
        }
        if self.b.get(j) == Some(&b'.') {
            j += 1;
            let n = digits(&mut j);
            if n == 0 || n > MAX_DIGITS {
                return Err(Fallback);
            }
        }
        if matches!(self.b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(self.b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let n = digits(&mut j);
            if n == 0 || n > MAX_EXP_DIGITS {
                return Err(Fallback);
            }
        }
        self.i = j;
        Ok((start as u32, j as u32))
    }

    /// A string token at `self.i`: (start, end past the closing quote,
    /// has escapes, text). Escaped strings are decoded by serde_json, which
    /// checks them as the tree engine's parser does.
    fn string(&mut self) -> R<(u32, u32, bool, Text)> {
        let start = self.i;
        let j = start + 1;
        let plain = |p: usize| {
            let end = j + p + 1;
            (
                start as u32,
                end as u32,
                false,
                Text::Raw(start as u32 + 1, (j + p) as u32),
            )
        };
        // Keys and most values are short: a word at a time first.
        match special_byte(self.b.get(j..).ok_or(Fallback)?) {
            Some(p) if self.b[j + p] == b'"' => {
                self.i = j + p + 1;
                return Ok(plain(p));
            }
            Some(p) if self.b[j + p] < 0x20 => return Err(Fallback),
            Some(_) => return self.escaped_string(start),
            None => {}
        }
        // Longer strings (a Secret's base64 data): memchr past the 32 bytes
        // just checked (control characters included).
        let rest = self.b.get(j + 32..).ok_or(Fallback)?;
        let q = memchr::memchr2(b'"', b'\\', rest).ok_or(Fallback)?;
        // No early exit: the fold vectorizes.
        if rest[..q].iter().fold(false, |acc, &c| acc | (c < 0x20)) {
            return Err(Fallback);
        }
        let p = q + 32;
        if rest[q] == b'\\' {
            return self.escaped_string(start);
        }
        self.i = j + p + 1;
        Ok(plain(p))
    }

    /// A string with an escape, starting at `start`: decoded, its end found
    /// on the way (one pass, see [`crate::json_text::unquote_prefix`]).
    fn escaped_string(&mut self, start: usize) -> R<(u32, u32, bool, Text)> {
        let (d, len) = self
            .s
            .get(start..)
            .and_then(crate::json_text::unquote_prefix)
            .ok_or(Fallback)?;
        let end = start + len;
        self.i = end;
        self.sc.decoded.push(d);
        Ok((
            start as u32,
            end as u32,
            true,
            Text::Dec((self.sc.decoded.len() - 1) as u32),
        ))
    }

    fn object(&mut self, h: Here) -> R<()> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let seen = self.sc.seen.len();
        loop {
            if self.peek() != Some(b'"') {
                return Err(Fallback);
            }
            let (start, _, esc, text) = self.string()?;
            let sig = signature(self.sc.text(self.s, text).as_bytes());
            self.sc.seen.push((sig, text));
            self.sc.keys.push(Key {
                start,
                esc,
                text,
                loc: h.loc,
            });
            self.ws();
            self.expect(b':')?;
            self.ws();
            let s: &'a str = self.s;
            let key: Cow<'a, str> = match text {
                Text::Raw(a, b) => Cow::Borrowed(s.get(a as usize..b as usize).unwrap_or("")),
                Text::Dec(_) => Cow::Owned(self.sc.text(s, text).to_owned()),
            };
            let child = self.child_key(&h, &key)?;
            self.child(child)?;
            self.sc.states.truncate(h.states.1 as usize);
            if self.separator(b'}')? {
                break;
            }
        }
        self.check_unique(seen)?;
        self.sc.seen.truncate(seen);
        Ok(())
    }

    /// After a member or element: `,` (then `false`, at the next token) or
    /// `close` (then `true`, past it); anything else is not JSON.
    fn separator(&mut self, close: u8) -> R<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(Fallback),
        }
    }

    /// Duplicate keys: the tree engine keeps the last (or refuses a
    /// duplicate `kind`); leave them to it.
    fn check_unique(&self, from: usize) -> R<()> {
        let keys = self.sc.seen.get(from..).unwrap_or_default();
        let text = |t: &Text| self.sc.text(self.s, *t);
        if keys.len() <= 16 {
            for (i, (sa, a)) in keys.iter().enumerate() {
                for (sb, b) in &keys[i + 1..] {
                    if sa == sb && text(a) == text(b) {
                        return Err(Fallback);
                    }
                }
            }
            return Ok(());
        }
        let mut all: Vec<&str> = keys.iter().map(|(_, t)| text(t)).collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(Fallback);
        }
        Ok(())
    }

    fn array(&mut self, h: Here) -> R<()> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let child = self.child_index(&h, index);
            self.child(child)?;
            self.sc.states.truncate(h.states.1 as usize);
            if self.separator(b']')? {
                return Ok(());
            }
            index += 1;
        }
    }

    /// Field-path automaton step: the states of the child, and the rules
    /// whose paths end at it.
    fn step_paths(&mut self, h: &Here, matches: impl Fn(&Seg) -> bool) -> (u64, (u32, u32)) {
        let from = self.sc.states.len();
        let mut ended = 0u64;
        for k in h.states.0 as usize..h.states.1 as usize {
            let (r, p, pos) = self.sc.states[k];
            let Some(path) = self
                .rules
                .get(r as usize)
                .and_then(|rule| rule.fields.get(p as usize))
            else {
                continue;
            };
            let Some(seg) = path.get(pos as usize) else {
                continue;
            };
            if matches(seg) {
                if pos as usize + 1 == path.len() {
                    ended |= 1 << r;
                } else {
                    self.sc.states.push((r, p, pos + 1));
                }
            }
        }
        (ended, (from as u32, self.sc.states.len() as u32))
    }

    fn child_key(&mut self, h: &Here, key: &str) -> R<Here> {
        if let Some(c) = plain_child(h) {
            return Ok(c);
        }
        match h.role {
            Role::EventRoot => match key {
                "kind" => return Err(Fallback),
                "object" => {
                    if self.peek() != Some(b'{') {
                        return Err(Fallback);
                    }
                    return Ok(self.unit_root());
                }
                "type" => {
                    self.unit.type_string = self.peek() == Some(b'"');
                    return Ok(wrapper(h));
                }
                _ => return Ok(wrapper(h)),
            },
            _ if h.loc.wrapper => return Ok(wrapper(h)),
            _ => {}
        }
        let root = h.role == Role::UnitRoot;
        let (ended, states) = self.step_paths(h, |seg| match seg {
            Seg::Any => true,
            Seg::Key(s) => s == key || (root && s == "data" && key == "binaryData"),
        });
        let mut loc = h.loc;
        loc.depth += 1;
        let (mut role, mut special) = (Role::Plain, Special::None);
        if root {
            loc.top = Top::of(key);
            match key {
                "apiVersion" => special = Special::ApiVersion,
                "kind" => special = Special::Kind,
                "metadata" => role = Role::Metadata,
                "items" if self.peek() == Some(b'[') => self.unit.items_array = true,
                _ => {}
            }
        }
        if loc.depth == 2 {
            loc.second_key = true;
            loc.second_identity = IDENTITY_METADATA.contains(&key);
        }
        match h.role {
            Role::Metadata => match key {
                "name" => special = Special::Name,
                "namespace" => special = Special::Namespace,
                "annotations" => role = Role::Annotations,
                _ => {}
            },
            Role::Annotations if key == LAST_APPLIED_ANNOTATION => special = Special::Annotation,
            _ => {}
        }
        let keyed = if h.keyed_map {
            self.sc.keyed.push(self.text_of_key());
            (self.sc.keyed.len() - 1) as u32
        } else {
            h.keyed
        };
        let env = match h.env {
            Env::Trie(n) => SPEC_TRIE
                .iter()
                .find(|(from, k, _)| *from == n && *k == key)
                .map(|(_, _, to)| Env::Trie(*to))
                .unwrap_or(
                    if SPEC_NODES.contains(&n) && CONTAINER_LISTS.contains(&key) {
                        Env::ContainerList
                    } else {
                        Env::No
                    },
                ),
            Env::Container if key == "env" => Env::EntryList,
            Env::Entry(id) if key == "value" => Env::Value(id),
            Env::Entry(id) if key == "name" => Env::Name(id),
            Env::Value(id) => Env::Value(id),
            _ => Env::No,
        };
        Ok(Here {
            loc,
            role,
            special,
            rules: h.rules | ended,
            states,
            keyed,
            keyed_map: root && KEYED_MAPS.contains(&key),
            env,
        })
    }

    /// The key just read (the last one recorded).
    fn text_of_key(&self) -> Text {
        self.sc.keys.last().map_or(Text::Raw(0, 0), |k| k.text)
    }

    fn child_index(&mut self, h: &Here, index: usize) -> Here {
        if let Some(c) = plain_child(h) {
            return c;
        }
        if h.loc.wrapper {
            return wrapper(h);
        }
        let (ended, states) = self.step_paths(h, |seg| match seg {
            Seg::Any => true,
            Seg::Key(s) => s.parse::<usize>().ok() == Some(index),
        });
        let mut loc = h.loc;
        loc.depth += 1;
        if loc.depth == 2 {
            loc.second_key = false;
            loc.second_identity = false;
        }
        let env = match h.env {
            Env::ContainerList => Env::Container,
            Env::EntryList => {
                self.sc.entries.push(None);
                Env::Entry((self.sc.entries.len() - 1) as u32)
            }
            Env::Value(id) => Env::Value(id),
            _ => Env::No,
        };
        Here {
            loc,
            role: Role::Plain,
            special: Special::None,
            rules: h.rules | ended,
            states,
            keyed: h.keyed,
            keyed_map: false,
            env,
        }
    }
}

/// Where the first `"`, `\` or control character is in the first 32
/// bytes of `b` (eight at a time); `None` if not there.
fn special_byte(b: &[u8]) -> Option<usize> {
    first_of_32::<true>(b)
}

/// Where the first `"` or `\` is in `b`: the first 32 bytes eight at a
/// time, the rest with memchr. The stream's value scan finds the end of
/// every string this way; most are keys and short values, for which
/// memchr's call and set-up cost more than the search.
pub(super) fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    match first_of_32::<false>(b) {
        Some(p) => Some(p),
        None => b
            .get(32..)
            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
            .map(|p| p + 32),
    }
}

/// Where the first `"` or `\` (and, with `CTRL`, control character) is in
/// the first 32 bytes of `b`; `None` if not there.
fn first_of_32<const CTRL: bool>(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= b.len().min(32) {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(w);
        let q = x ^ (LO * u64::from(b'"'));
        let e = x ^ (LO * u64::from(b'\\'));
        // Per byte: zero (a quote, a backslash) or below 0x20. Borrows make
        // false hits only above a true one, so the lowest hit is right.
        let ctrl = if CTRL {
            x.wrapping_sub(LO * 0x20) & !x
        } else {
            0
        };
        let hit = ((q.wrapping_sub(LO) & !q) | (e.wrapping_sub(LO) & !e) | ctrl) & HI;
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i < 32 {
        return b[i..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || (CTRL && c < 0x20))
            .map(|p| i + p);
    }
    None
}

/// Equal keys have equal signatures: length and a few bytes.
fn signature(k: &[u8]) -> u64 {
    let at = |i: usize| u64::from(k.get(i).copied().unwrap_or(0));
    let n = k.len();
    (n as u64) << 40
        | at(0) << 32
        | at(1) << 24
        | at(n / 2) << 16
        | at(n.wrapping_sub(2)) << 8
        | at(n.wrapping_sub(1))
}

/// The child of a value deep in the unit where nothing is tracked but what
/// it inherits (no path automaton states, no roles, no env steps to take):
/// most values of an object.
fn plain_child(h: &Here) -> Option<Here> {
    let env = match h.env {
        Env::No => Env::No,
        Env::Value(id) => Env::Value(id),
        _ => return None,
    };
    if h.role != Role::Plain || h.states.0 != h.states.1 || h.keyed_map || h.loc.depth < 2 {
        return None;
    }
    Some(Here {
        loc: Loc {
            depth: h.loc.depth + 1,
            ..h.loc
        },
        role: Role::Plain,
        special: Special::None,
        rules: h.rules,
        states: h.states,
        keyed: h.keyed,
        keyed_map: false,
        env,
    })
}

fn env_value(e: Env) -> u32 {
    match e {
        Env::Value(id) => id,
        _ => NONE,
    }
}

/// A value of a watch event outside its object.
fn wrapper(h: &Here) -> Here {
    Here {
        loc: Loc {
            wrapper: true,
            depth: h.loc.depth.saturating_add(1),
            ..h.loc
        },
        role: Role::Plain,
        special: Special::None,
        rules: 0,
        states: (h.states.1, h.states.1),
        keyed: NONE,
        keyed_map: false,
        env: Env::No,
    }
}

/// How the object scrub treats a string (see `engine::scrub_object`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Untouched,
    Base64Value,
    Scrubbed,
}

fn leaf_region(l: &Leaf, is_secret: bool) -> Region {
    let loc = &l.loc;
    if loc.wrapper {
        return Region::Untouched;
    }
    match loc.top {
        Top::Root | Top::ApiVersion | Top::Kind => Region::Untouched,
        Top::Metadata if loc.depth >= 2 && loc.second_key && loc.second_identity => {
            Region::Untouched
        }
        t if t.base64(is_secret) && loc.depth == 2 && loc.second_key => Region::Base64Value,
        _ => Region::Scrubbed,
    }
}

/// Whether the object scrub looks at the keys of the object at `loc`.
fn keys_scrubbed(loc: &Loc, is_secret: bool) -> bool {
    if loc.wrapper || loc.depth == 0 {
        return false;
    }
    match loc.top {
        Top::Root | Top::ApiVersion | Top::Kind => false,
        Top::Metadata => loc.depth >= 2 && !(loc.second_key && loc.second_identity),
        t if t.base64(is_secret) => loc.depth >= 2,
        _ => true,
    }
}

/// The runs of `s` between changed values (`cur[i]` set) in which `pred`
/// finds something.
fn hot_runs(
    s: &str,
    leaves: &[Leaf],
    cur: &[Option<String>],
    pred: impl Fn(&str) -> bool,
) -> Vec<(u32, u32)> {
    let mut hot = Vec::new();
    for_each_run(s, leaves, cur, |from, run| {
        if pred(run) {
            hot.push((from, from + run.len() as u32));
        }
    });
    hot
}

/// Leaf `i`'s text as it stands: its rewrite if it has one, else its text
/// in the unit. Borrowed: `decide` reads it for every candidate leaf of
/// every object and rewrites few.
fn leaf_text<'a>(
    i: usize,
    cur: &'a [Option<String>],
    sc: &'a Scratch,
    s: &'a str,
    leaves: &[Leaf],
) -> &'a str {
    match &cur[i] {
        Some(c) => c.as_str(),
        None => sc.text(s, leaves[i].text),
    }
}

/// The text of the unit's own leaf of kind `which` (apiVersion, kind,
/// name, namespace), as it stands.
fn special_text<'a>(
    which: Special,
    cur: &'a [Option<String>],
    sc: &'a Scratch,
    s: &'a str,
    leaves: &[Leaf],
) -> Option<&'a str> {
    leaves
        .iter()
        .position(|l| !l.loc.wrapper && !l.num && l.special == which)
        .map(|i| leaf_text(i, cur, sc, s, leaves))
}

/// Whether the detectors must read escaped string `l` decoded although
/// its raw text holds no literal hit. Only a `\u` escape can decode to a
/// literal's character: the others give a quote, a backslash, `/` or a
/// control character, none of which a literal holds (`detect::required_literals`),
/// so without one the decoded text holds a literal only where the raw text
/// does. A string in a run the literals did not decide (non-ASCII) is
/// always read: that run's regex search saw the escapes, not what they stand
/// for (`password\t=x` does not match `password\s*=` as written).
fn escapes_may_hide_a_literal(s: &str, l: &Leaf, undecided: &[(u32, u32)]) -> bool {
    // Backslashes, not a substring search: a one-shot `memmem::find`
    // builds a searcher (hundreds of instructions) per string.
    in_runs(undecided, l.start)
        || s.as_bytes()
            .get(l.start as usize..l.end as usize)
            .is_none_or(|raw| {
                memchr::memchr_iter(b'\\', raw).any(|i| raw.get(i + 1) == Some(&b'u'))
            })
}

/// Every run of `s` between changed values, with its offset.
fn for_each_run(s: &str, leaves: &[Leaf], cur: &[Option<String>], mut f: impl FnMut(u32, &str)) {
    let mut from = 0u32;
    for (l, c) in leaves.iter().zip(cur) {
        if c.is_some() {
            if let Some(run) = s.get(from as usize..l.start as usize) {
                f(from, run);
            }
            from = l.end;
        }
    }
    if let Some(run) = s.get(from as usize..) {
        f(from, run);
    }
}

/// Whether `at` lies in one of `runs` (sorted, not overlapping: as
/// [`for_each_run`] gives them). A binary search: one per string, so a unit
/// with many strings and many runs stays linear-logarithmic.
pub(super) fn in_runs(runs: &[(u32, u32)], at: u32) -> bool {
    let i = runs.partition_point(|&(a, _)| a <= at);
    i > 0 && runs.get(i - 1).is_some_and(|&(_, b)| at < b)
}

/// Whether one of `hits` (sorted by start) lies inside `start..end` with
/// room on both sides. Hits starting inside are visited in order until one
/// fits; in an unescaped string every one does (the literals hold no quote),
/// so each string looks at few hits however many the unit holds.
pub(super) fn hit_inside(hits: &[(u32, u32)], start: u32, end: u32) -> bool {
    let from = hits.partition_point(|&(a, _)| a <= start);
    hits.get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&(a, _)| a < end)
        .any(|&(_, b)| b < end)
}

/// The byte path keeps rule, field and segment indexes in `u16`s: a policy
/// beyond that (no real one is) goes to the tree engine.
fn rule_fits_u16(rule: &CompiledRule) -> bool {
    rule.fields.len() <= usize::from(u16::MAX)
        && rule.fields.iter().all(|f| f.len() < usize::from(u16::MAX))
}

impl Masker {
    /// Mask one unit (see [`Shape`]) from its bytes, appending the result
    /// to `out`; `None` (and `out` unchanged) when the tree engine must do
    /// it. The count is the one the tree engine gives; the output parses to
    /// the tree engine's value, with unchanged values passed on as they came.
    pub(super) fn mask_bytes(
        &self,
        ctx: &MaskContext,
        shape: Shape<'_>,
        input: &[u8],
        sc: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        let at = out.len();
        match self.mask_bytes_inner(ctx, shape, input, sc, out) {
            Ok(n) => Some(n),
            Err(Fallback) => {
                out.truncate(at);
                None
            }
        }
    }

    fn mask_bytes_inner(
        &self,
        ctx: &MaskContext,
        shape: Shape<'_>,
        input: &[u8],
        sc: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> R<usize> {
        if self.rules.len() > MAX_RULES
            || input.len() >= u32::MAX as usize
            || !self.rules.iter().all(rule_fits_u16)
        {
            return Err(Fallback);
        }
        let s = std::str::from_utf8(input).map_err(|_| Fallback)?;
        sc.clear();
        let unit = {
            let mut p = Parser {
                b: input,
                s,
                i: 0,
                sc: &mut *sc,
                rules: &self.rules,
                unit: Unit::default(),
            };
            p.run(shape)?;
            p.unit
        };
        if !unit.has_object || (matches!(shape, Shape::Event) && !unit.type_string) {
            return Err(Fallback);
        }
        // Borrowed from the input unless it had an escape (the scratch
        // space that holds the decoded text is needed below).
        let kind: Option<Cow<'_, str>> = unit.kind.map(|t| match t {
            Text::Raw(a, b) => Cow::Borrowed(s.get(a as usize..b as usize).unwrap_or("")),
            Text::Dec(_) => Cow::Owned(sc.text(s, t).to_owned()),
        });
        match kind.as_deref() {
            Some(k) if k == "Table" || k == "PartialObjectMetadata" || k.ends_with("List") => {
                return Err(Fallback);
            }
            Some(_) => {}
            None if matches!(shape, Shape::Document) || unit.items_array => {
                return Err(Fallback);
            }
            None => {}
        }
        let hint = match shape {
            Shape::Item { list_kind } => list_kind
                .and_then(|k| k.strip_suffix("List"))
                .filter(|k| !k.is_empty()),
            _ => None,
        };
        let targets = Masker::resources_of(ctx, kind.as_deref().or(hint));
        let is_secret = targets.iter().any(|(r, s)| *r == "secrets" && s.is_empty());
        let mut applicable = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            if targets.iter().any(|(res, sub)| rule.applies_to(res, sub)) {
                applicable |= 1 << i;
            }
        }
        let on = |i: usize| applicable & (1 << i) != 0;
        let keyed_hit: Vec<bool> = sc
            .keyed
            .iter()
            .map(|t| {
                let k = sc.text(s, *t);
                self.rules
                    .iter()
                    .enumerate()
                    .any(|(i, r)| on(i) && r.keys.as_ref().is_some_and(|re| re.is_match(k)))
            })
            .collect();
        let entry_hit: Vec<bool> = sc
            .entries
            .iter()
            .map(|t| {
                t.is_some_and(|t| {
                    let name = sc.text(s, t);
                    self.rules.iter().enumerate().any(|(i, r)| {
                        on(i) && r.env_names.as_ref().is_some_and(|re| re.is_match(name))
                    })
                })
            })
            .collect();

        let leaves = std::mem::take(&mut sc.leaves);
        let mut cur: Vec<Option<String>> = std::mem::take(&mut sc.cur);
        cur.clear();
        cur.resize(leaves.len(), None);
        let r = self.decide(
            ctx, s, sc, &leaves, &mut cur, is_secret, applicable, &keyed_hit, &entry_hit,
        );
        if r.is_ok() {
            out.reserve(input.len());
            let mut pos = 0usize;
            for (l, c) in leaves.iter().zip(&cur) {
                let Some(c) = c else { continue };
                out.extend_from_slice(&input[pos..l.start as usize]);
                if l.num {
                    out.push(b'0');
                } else {
                    crate::json_text::push_quoted(out, c);
                }
                pos = l.end as usize;
            }
            out.extend_from_slice(&input[pos..]);
        }
        sc.leaves = leaves;
        sc.cur = cur;
        r
    }

    /// The tree engine's steps over the recorded values: rules, base64 maps,
    /// detectors, the last-applied annotation, the object scrub, the
    /// context's scrub set. Returns the count.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        ctx: &MaskContext,
        s: &str,
        sc: &Scratch,
        leaves: &[Leaf],
        cur: &mut [Option<String>],
        is_secret: bool,
        applicable: u64,
        keyed_hit: &[bool],
        entry_hit: &[bool],
    ) -> R<usize> {
        let mut found: Vec<Vec<u8>> = Vec::new();
        // The unit's own count (the annotation is judged on it) and the
        // rest (a watch event's other members, the context's scrub set).
        let mut n = 0usize;
        let mut n_other = 0usize;
        let detectors = &self.detectors;

        // Rules, then base64 maps decoded for the detectors.
        for (i, l) in leaves.iter().enumerate() {
            if l.loc.wrapper {
                continue;
            }
            let b64 = l.loc.top.base64(is_secret);
            let masked = l.rules & applicable != 0
                || keyed_hit.get(l.keyed as usize).copied().unwrap_or(false)
                || entry_hit.get(l.env as usize).copied().unwrap_or(false);
            if masked {
                if l.num {
                    let v: f64 = sc.text(s, l.text).parse().map_err(|_| Fallback)?;
                    if v != 0.0 {
                        cur[i] = Some("0".to_string());
                        n += 1;
                    }
                } else {
                    let v0 = sc.text(s, l.text);
                    let marker = if b64 { MARKER_BASE64 } else { MARKER };
                    if v0 != marker {
                        remember(&mut found, v0, b64);
                        cur[i] = Some(marker.to_string());
                        n += 1;
                    }
                }
            }
            if !l.num && b64 && l.loc.depth == 2 && l.loc.second_key && !detectors.is_empty() {
                let v = leaf_text(i, cur, sc, s, leaves);
                if v != MARKER_BASE64
                    && let Ok(decoded) = B64.decode(v.as_bytes())
                    && detectors.apply(&String::from_utf8_lossy(&decoded)).1 > 0
                {
                    remember(&mut found, v, true);
                    cur[i] = Some(MARKER_BASE64.to_string());
                    n += 1;
                }
            }
        }

        // Detectors on every string but the annotation.
        if !detectors.is_empty() {
            // Runs the literals cannot decide (non-ASCII) are searched
            // with the regex set; elsewhere only the strings that hold a
            // literal are candidates.
            let (mut hot, mut undecided, mut hits, mut lower) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for_each_run(s, leaves, cur, |from, run| {
                if !detectors.literal_hits(run, from, &mut lower, &mut hits) {
                    let r = (from, from + run.len() as u32);
                    undecided.push(r);
                    if detectors.may_match(run) {
                        hot.push(r);
                    }
                }
            });
            // Runs come in order, and each run's hits in order: `hits` is
            // sorted, as `hit_inside` needs.
            debug_assert!(hits.is_sorted());
            for (i, l) in leaves.iter().enumerate() {
                if l.num || (!l.loc.wrapper && l.special == Special::Annotation) {
                    continue;
                }
                let candidate = cur[i].is_some()
                    || in_runs(&hot, l.start)
                    || hit_inside(&hits, l.start, l.end)
                    || (l.esc && escapes_may_hide_a_literal(s, l, &undecided));
                if !candidate {
                    continue;
                }
                let v = leaf_text(i, cur, sc, s, leaves);
                let collect = (!l.loc.wrapper).then_some(&mut found);
                let (out, k) = detectors.apply_collect(v, collect);
                if k > 0 {
                    cur[i] = Some(out.into_owned());
                }
                if l.loc.wrapper {
                    n_other += k;
                } else {
                    n += k;
                }
            }
        }

        // The last-applied annotation, judged as a whole.
        if let Some(ai) = leaves
            .iter()
            .position(|l| !l.loc.wrapper && !l.num && l.special == Special::Annotation)
        {
            let ann = leaf_text(ai, cur, sc, s, leaves);
            if n > 0 || is_secret || self.annotation_would_mask(ctx, ann) {
                let sk = skeleton_from(
                    ann,
                    special_text(Special::ApiVersion, cur, sc, s, leaves),
                    special_text(Special::Kind, cur, sc, s, leaves),
                    special_text(Special::Name, cur, sc, s, leaves),
                    special_text(Special::Namespace, cur, sc, s, leaves),
                );
                if sk != ann {
                    cur[ai] = Some(sk);
                    n += 1;
                }
            }
        }

        // The object scrub.
        if !found.is_empty() {
            let set = ScrubSet::for_object(&found);
            if !set.is_empty() {
                let filter = set.run_filter();
                let hot = hot_runs(s, leaves, cur, |run| filter.may_match(run));
                for (i, l) in leaves.iter().enumerate() {
                    if l.num {
                        continue;
                    }
                    let region = leaf_region(l, is_secret);
                    if region == Region::Untouched
                        || (cur[i].is_none() && !l.esc && !in_runs(&hot, l.start))
                    {
                        continue;
                    }
                    let v = leaf_text(i, cur, sc, s, leaves);
                    if region == Region::Base64Value {
                        if set.matches_str(v) {
                            cur[i] = Some(MARKER_BASE64.to_string());
                            n += 1;
                        }
                    } else if let Some(o) = set.scrub_str(v) {
                        cur[i] = Some(o);
                        n += 1;
                    }
                }
                for k in &sc.keys {
                    if keys_scrubbed(&k.loc, is_secret)
                        && (k.esc || in_runs(&hot, k.start))
                        && set.matches_str(sc.text(s, k.text))
                    {
                        return Err(Fallback);
                    }
                }
            }
        }

        // The context's scrub set, over every string and key, one by one:
        // its automaton's prefilter stops so often in JSON text that a
        // search over the unchanged runs costs more than one per string.
        if let Some(set) = ctx.scrub.as_deref().filter(|set| !set.is_empty()) {
            for (i, l) in leaves.iter().enumerate() {
                if l.num {
                    continue;
                }
                let scrubbed = match &cur[i] {
                    Some(c) => set.scrub_str(c),
                    None => set.scrub_str(sc.text(s, l.text)),
                };
                if let Some(o) = scrubbed {
                    cur[i] = Some(o);
                    n_other += 1;
                }
            }
            if sc.keys.iter().any(|k| set.matches_str(sc.text(s, k.text))) {
                return Err(Fallback);
            }
        }
        Ok(n + n_other)
    }
}
