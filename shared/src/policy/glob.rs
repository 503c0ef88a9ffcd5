//! A rule's glob patterns (`namespaces`, `resourceNames`, `serviceAccounts`,
//! `users`, `groups`, `tools`), compiled once, with the common shapes
//! matched without the regex engine: a plain name, `*`, and a name prefix
//! followed by one `*` (`prod-*`). globset matches every pattern through a
//! regex (~500 instructions a call), and every request runs each rule's
//! patterns until one rule decides; the example policy's `prod-*` alone was
//! checked on every request. Anything else (`?`, classes, alternatives,
//! escapes, `**`, a `*` inside) goes to globset, so the semantics stay
//! globset's, which the property test below checks on generated patterns.

use globset::{GlobBuilder, GlobMatcher};

/// One compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    shape: Shape,
    /// `*` does not match `/` (every pattern but end-user names and groups).
    literal_separator: bool,
    matcher: GlobMatcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// No metacharacter: the text itself.
    Exact(String),
    /// `*`.
    Any,
    /// Plain text, then a final `*`.
    Prefix(String),
    /// Anything else: globset decides.
    General,
}

fn is_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' | ',')
}

impl Glob {
    /// Compiles `pattern`; with `literal_separator`, `*` and `?` do not
    /// match `/`.
    pub(crate) fn new(pattern: &str, literal_separator: bool) -> Result<Glob, globset::Error> {
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(literal_separator)
            .build()?
            .compile_matcher();
        let shape = if !pattern.contains(is_meta) {
            Shape::Exact(pattern.to_string())
        } else if pattern == "*" {
            Shape::Any
        } else {
            match pattern.strip_suffix('*') {
                Some(p) if !p.contains(is_meta) => Shape::Prefix(p.to_string()),
                _ => Shape::General,
            }
        };
        Ok(Glob {
            shape,
            literal_separator,
            matcher,
        })
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        let free = |rest: &str| !self.literal_separator || !rest.as_bytes().contains(&b'/');
        match &self.shape {
            Shape::Exact(p) => s == p,
            Shape::Any => free(s),
            Shape::Prefix(p) => s.strip_prefix(p.as_str()).is_some_and(free),
            Shape::General => self.matcher.is_match(s),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_shapes_take_the_fast_paths() {
        let shape = |p: &str| Glob::new(p, true).unwrap().shape;
        assert_eq!(shape("prod"), Shape::Exact("prod".into()));
        assert_eq!(shape("*"), Shape::Any);
        assert_eq!(shape("prod-*"), Shape::Prefix("prod-".into()));
        for p in [
            "**", "a*b", "*-prod", "p?d", "[ab]*", "{a,b}*", "a\\*", "a**",
        ] {
            assert_eq!(shape(p), Shape::General, "{p}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Every pattern matches exactly what globset matches, with and
        /// without the literal separator.
        #[test]
        fn matches_as_globset_does(
            pattern in "[ab/*?.-]{0,6}",
            text in "[ab/.-]{0,7}",
            sep in any::<bool>(),
        ) {
            let Ok(g) = Glob::new(&pattern, sep) else {
                return Ok(());
            };
            let reference = GlobBuilder::new(&pattern)
                .literal_separator(sep)
                .build()
                .unwrap()
                .compile_matcher();
            prop_assert_eq!(g.is_match(&text), reference.is_match(&text), "{:?} {:?}", pattern, text);
        }
    }
}
