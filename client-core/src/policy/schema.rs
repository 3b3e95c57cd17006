//! The policy registry: path patterns with `*` wildcards mapped to [`Policy`]s.
//!
//! A pattern is written like a [`DocPath`] (`todos/*/title`, `/cart/items`, `counters/*`) where a
//! segment that is exactly `*` matches any one key or index. When several patterns match a path,
//! the most specific wins: comparing segment by segment from the left, a literal beats `*`
//! (`todos/0/title` beats `todos/*/title`, which beats `*/*/title`). Paths no pattern matches
//! have [`Policy::Causal`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value as Json;

use super::candidate::Candidate;
use super::error::SchemaError;
use crate::path::{DocPath, PathError};

/// How concurrent values at a path are merged when read.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Automerge's own rule: a causally later write replaces an earlier one; among concurrent
    /// writes Automerge picks one deterministically (by operation id). The default.
    #[default]
    Causal,
    /// Last writer wins: among concurrent values, the one whose change has the greatest HLC
    /// timestamp `(ms, counter, actor)`. Causally later writes still replace earlier ones.
    Lww,
    /// An Automerge counter: concurrent increments add up. Concurrently *created* counters at the
    /// same key are summed too (each increment counted once).
    Counter,
    /// A set stored as a map `element -> true`; removing deletes the key. A concurrent add and
    /// remove of the same element keeps it (observed-remove set). Reads as a sorted JSON array.
    AddWinsSet,
    /// A set stored as a map `element -> true | false`: `true` is a member, `false` a removal
    /// tombstone. An element is a member only when every concurrent value for it is `true`, so a
    /// concurrent add and remove drops it. Reads as a sorted JSON array.
    RemoveWinsSet,
    /// Collaborative text (an Automerge text object): concurrent edits merge character by
    /// character; marks carry rich-text formatting. Reads as a string.
    Text,
    /// Every concurrent value is kept and exposed through `conflicts`; reads return Automerge's
    /// deterministic pick until the app or the user calls `resolve`.
    KeepConflicts,
    /// An application resolver over the concurrent candidates.
    Custom(Arc<dyn Resolver>),
}

impl Policy {
    /// A custom policy from a function (see [`Resolver`]).
    pub fn custom<F>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(&DocPath, &[Candidate]) -> Result<Json, String> + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(FnResolver {
            name: name.into(),
            f,
        }))
    }

    /// The policy's name (`lww`, `counter`, ...; a custom policy is `custom`).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Causal => "causal",
            Policy::Lww => "lww",
            Policy::Counter => "counter",
            Policy::AddWinsSet => "add-wins-set",
            Policy::RemoveWinsSet => "remove-wins-set",
            Policy::Text => "text",
            Policy::KeepConflicts => "keep-conflicts",
            Policy::Custom(_) => "custom",
        }
    }

    /// True for the two set policies.
    pub fn is_set(&self) -> bool {
        matches!(self, Policy::AddWinsSet | Policy::RemoveWinsSet)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Custom(r) => write!(f, "Custom({})", r.name()),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Policy {
    type Err = SchemaError;

    /// Parses the names of the built-in policies (for CLI flags and config files).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "causal" => Policy::Causal,
            "lww" | "last-writer-wins" => Policy::Lww,
            "counter" => Policy::Counter,
            "add-wins-set" | "add-wins" => Policy::AddWinsSet,
            "remove-wins-set" | "remove-wins" => Policy::RemoveWinsSet,
            "text" => Policy::Text,
            "keep-conflicts" | "keep" => Policy::KeepConflicts,
            _ => {
                return Err(SchemaError::UnknownPolicy { name: s.to_owned() });
            }
        })
    }
}

/// An application's conflict resolver. It must be deterministic: a pure function of `path` and
/// `candidates` (no clock, randomness or replica-local state), or replicas will disagree.
///
/// It is called only when there are at least two concurrent candidates, sorted by
/// `(hlc, change hash)` ascending; whatever it returns is the resolved value (it may be one of
/// the candidates' values or a merge of them). An `Err` or a panic is reported as a
/// [`PolicyError`](super::PolicyError) by the read; the document is not affected. (Panics are
/// caught with `catch_unwind`, which needs the default `panic = "unwind"`; the default panic hook
/// still prints them.)
pub trait Resolver: Send + Sync {
    /// A name for errors and debugging.
    fn name(&self) -> &str;
    /// Picks or merges a value.
    fn resolve(&self, path: &DocPath, candidates: &[Candidate]) -> Result<Json, String>;
}

struct FnResolver<F> {
    name: String,
    f: F,
}

impl<F> Resolver for FnResolver<F>
where
    F: Fn(&DocPath, &[Candidate]) -> Result<Json, String> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn resolve(&self, path: &DocPath, candidates: &[Candidate]) -> Result<Json, String> {
        (self.f)(path, candidates)
    }
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches this key (or index) only.
    Literal(String),
    /// `*`: matches any one key or index.
    Any,
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when the pattern matches exactly this path.
    pub fn matches(&self, path: &DocPath) -> bool {
        self.segments.len() == path.segments().len()
            && self
                .segments
                .iter()
                .zip(path.segments())
                .all(|(p, s)| match p {
                    Segment::Any => true,
                    Segment::Literal(l) => l == s,
                })
    }

    /// Literal-ness of each segment, compared lexicographically for precedence.
    fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|s| matches!(s, Segment::Literal(_)))
            .collect()
    }
}

impl FromStr for Pattern {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| SchemaError::Malformed {
            pattern: s.to_owned(),
            reason,
        };
        let path: DocPath = s.parse().map_err(|e| match e {
            PathError::Malformed { reason, .. } => bad(reason),
            _ => bad("not a path"),
        })?;
        if path.is_root() {
            return Err(bad(
                "a policy applies below the root (the root is always a map)",
            ));
        }
        let mut segments = Vec::with_capacity(path.segments().len());
        for seg in path.segments() {
            if seg == "*" {
                segments.push(Segment::Any);
            } else if seg.contains('*') {
                return Err(bad(
                    "`*` must be a whole segment (`todos/*/title`, not `todo*` or `**`)",
                ));
            } else if seg.trim() != seg || seg.is_empty() {
                return Err(bad("segments may not start or end with whitespace"));
            } else {
                segments.push(Segment::Literal(seg.clone()));
            }
        }
        Ok(Self { segments })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in &self.segments {
            match seg {
                Segment::Any => f.write_str("/*")?,
                Segment::Literal(l) => write!(f, "/{}", l.replace('~', "~0").replace('/', "~1"))?,
            }
        }
        Ok(())
    }
}

/// The policy registry of a document type. Cheap to clone; share it behind an `Arc` between
/// threads. Reads and writes live in the [`policy`](super) module's other files as methods.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    rules: Vec<(Pattern, Policy)>,
}

const CAUSAL: Policy = Policy::Causal;

impl Schema {
    /// An empty schema: every path is [`Policy::Causal`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `policy` for `pattern`. Errors on a malformed or already registered pattern.
    pub fn register(&mut self, pattern: &str, policy: Policy) -> Result<&mut Self, SchemaError> {
        let parsed: Pattern = pattern.parse()?;
        if self.rules.iter().any(|(p, _)| *p == parsed) {
            return Err(SchemaError::Duplicate {
                pattern: parsed.to_string(),
            });
        }
        self.rules.push((parsed, policy));
        Ok(self)
    }

    /// Builder form of [`Schema::register`].
    pub fn with(mut self, pattern: &str, policy: Policy) -> Result<Self, SchemaError> {
        self.register(pattern, policy)?;
        Ok(self)
    }

    /// Registers a rule written `pattern=policy` (e.g. `cart/items=add-wins-set`), as a CLI
    /// flag or config line would carry it.
    pub fn register_spec(&mut self, spec: &str) -> Result<&mut Self, SchemaError> {
        let (pattern, policy) = spec.rsplit_once('=').ok_or(SchemaError::Malformed {
            pattern: spec.to_owned(),
            reason: "expected `pattern=policy`",
        })?;
        let policy = policy.parse()?;
        self.register(pattern.trim(), policy)
    }

    /// The registered rules, in registration order.
    pub fn rules(&self) -> impl Iterator<Item = (&Pattern, &Policy)> {
        self.rules.iter().map(|(p, q)| (p, q))
    }

    /// The policy for a concrete path: the most specific matching pattern's, else `Causal`.
    pub fn policy_for(&self, path: &DocPath) -> &Policy {
        self.rules
            .iter()
            .filter(|(p, _)| p.matches(path))
            .max_by_key(|(p, _)| p.specificity())
            .map_or(&CAUSAL, |(_, policy)| policy)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn path(s: &str) -> DocPath {
        s.parse().unwrap()
    }

    #[test]
    fn wildcards_match_one_segment() {
        let s = Schema::new()
            .with("todos/*/title", Policy::Lww)
            .unwrap()
            .with("counters/*", Policy::Counter)
            .unwrap();
        assert_eq!(s.policy_for(&path("todos/3/title")).name(), "lww");
        assert_eq!(s.policy_for(&path("/todos/x/title")).name(), "lww");
        assert_eq!(s.policy_for(&path("todos/3")).name(), "causal");
        assert_eq!(s.policy_for(&path("todos/3/title/x")).name(), "causal");
        assert_eq!(s.policy_for(&path("counters/likes")).name(), "counter");
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let s = Schema::new()
            .with("*/*/title", Policy::Text)
            .unwrap()
            .with("todos/*/title", Policy::Lww)
            .unwrap()
            .with("todos/0/title", Policy::KeepConflicts)
            .unwrap()
            .with("todos/0/*", Policy::Counter)
            .unwrap();
        assert_eq!(
            s.policy_for(&path("todos/0/title")).name(),
            "keep-conflicts"
        );
        assert_eq!(s.policy_for(&path("todos/0/done")).name(), "counter");
        assert_eq!(s.policy_for(&path("todos/1/title")).name(), "lww");
        assert_eq!(s.policy_for(&path("notes/1/title")).name(), "text");
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for bad in [
            "",
            "/",
            "todos//title",
            "todos/",
            "to*dos",
            "**",
            "a/**/b",
            "a/~2",
            "a/ b",
        ] {
            let err = Schema::new().register(bad, Policy::Lww).unwrap_err();
            assert!(
                matches!(err, SchemaError::Malformed { .. }),
                "{bad:?}: {err}"
            );
        }
        let mut s = Schema::new();
        s.register("cart/items", Policy::AddWinsSet).unwrap();
        let dup = s.register("/cart/items", Policy::Lww).unwrap_err();
        assert_eq!(
            dup,
            SchemaError::Duplicate {
                pattern: "/cart/items".into()
            }
        );
    }

    #[test]
    fn specs_parse_for_the_cli() {
        let mut s = Schema::new();
        s.register_spec("cart/items=add-wins").unwrap();
        s.register_spec("name = lww").unwrap();
        assert!(s.policy_for(&path("cart/items")).is_set());
        assert_eq!(s.policy_for(&path("name")).name(), "lww");
        assert!(matches!(
            s.register_spec("x=fastest"),
            Err(SchemaError::UnknownPolicy { .. })
        ));
        assert!(s.register_spec("no-equals").is_err());
        let custom = Policy::custom("max", |_, c| Ok(c[0].value.clone()));
        assert_eq!(format!("{custom:?}"), "Custom(max)");
    }
}
