//! YAML text to a generic tree of [`Node`]s, each with its line, so that every later check
//! can name the line of the value at fault.
//!
//! serde-saphyr parses; its [`Spanned`] wrapper gives each node's location. Scalars keep
//! their source text (`value: 1.10` stays `1.10`, not the float `1.1`), as envoy's Go YAML
//! decoder does for string fields: non-string scalars are cut out of the source by their
//! byte span. Duplicate mapping keys are passed through and reported by the schema checks,
//! which know the field path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{
    Budget, DuplicateKeyPolicy, Location, MessageFormatter, NonFiniteFloatPolicy, Spanned,
    UserMessageFormatter,
};

use super::ConfigError;

/// One YAML node and the 1-based line it starts on.
#[derive(Clone, Debug)]
pub(super) struct Node {
    /// 1-based line of the node (for a mapping, its first key).
    pub(super) line: usize,
    /// What the node holds.
    pub(super) kind: Kind,
}

/// The shape of a node.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// `~`, `null` or nothing.
    Null,
    /// Any scalar, with its source text.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order (duplicate keys included).
    Map(Vec<(Node, Node)>),
}

/// A scalar: its text and what YAML made of it.
#[derive(Clone, Debug)]
pub(super) struct Scalar {
    /// The text: a string's value, or a number's or boolean's source spelling.
    pub(super) text: String,
    /// The resolved type.
    pub(super) ty: ScalarType,
}

/// What YAML resolved a scalar to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ScalarType {
    /// A string.
    Str,
    /// An integer (any base YAML accepts).
    Int(i128),
    /// A float.
    Float,
    /// A boolean.
    Bool(bool),
}

impl Node {
    /// A short description of the node for error messages: `"abc"`, `12`, `a list`.
    pub(super) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_owned(),
            Kind::Scalar(Scalar {
                text,
                ty: ScalarType::Str,
            }) => format!("{text:?}"),
            Kind::Scalar(scalar) => scalar.text.clone(),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// How deeply collections may nest. The deepest useful config, a sluice config file with
/// descriptors nested 16 levels (the most entries a key has) and `replaces` at the bottom,
/// nests 38 deep. Each level costs serde-saphyr about 38 KiB of stack in a debug build
/// (6 KiB in release), so this keeps a parse within a 2 MiB thread stack; the default of
/// 64 does not.
const MAX_DEPTH: usize = 40;

/// Parses one YAML document into a [`Node`] tree; `origin` names it in errors.
pub(super) fn parse(text: &str, origin: &str) -> Result<Node, ConfigError> {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.non_finite_float_policy = NonFiniteFloatPolicy::PassThrough;
    options.with_snippet = false;
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(to_node(raw, text)),
        Err(err) => Err(syntax_error(&err, origin)),
    }
}

fn syntax_error(err: &serde_saphyr::Error, origin: &str) -> ConfigError {
    let err = err.without_snippet();
    let message: String = match err {
        serde_saphyr::Error::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        } => format!("nested deeper than {MAX_DEPTH} levels"),
        _ => UserMessageFormatter
            .format_message(err)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    };
    let location = err.location().filter(|l| l.line() > 0);
    let message = match location {
        Some(l) => format!("invalid YAML: {message} (column {})", l.column()),
        None => format!("invalid YAML: {message}"),
    };
    ConfigError {
        file: origin.to_owned(),
        line: location.map(|l| to_usize(l.line())),
        field: String::new(),
        message,
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The deserialized shape before scalars get their source text.
enum Raw {
    Null,
    Str(String),
    Int(i128),
    Float,
    Bool(bool),
    Seq(Vec<Spanned<Self>>),
    Map(Vec<(Spanned<Self>, Spanned<Self>)>),
}

fn to_node(raw: Spanned<Raw>, text: &str) -> Node {
    let line = to_usize(raw.referenced.line()).max(1);
    let defined = raw.defined;
    let source = || source_text(text, defined);
    let kind = match raw.value {
        Raw::Null => Kind::Null,
        Raw::Str(s) => Kind::Scalar(Scalar {
            text: s,
            ty: ScalarType::Str,
        }),
        Raw::Int(n) => Kind::Scalar(Scalar {
            text: source().unwrap_or_else(|| n.to_string()),
            ty: ScalarType::Int(n),
        }),
        Raw::Float => Kind::Scalar(Scalar {
            text: source().unwrap_or_default(),
            ty: ScalarType::Float,
        }),
        Raw::Bool(b) => Kind::Scalar(Scalar {
            text: source().unwrap_or_else(|| b.to_string()),
            ty: ScalarType::Bool(b),
        }),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(|n| to_node(n, text)).collect()),
        Raw::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (to_node(k, text), to_node(v, text)))
                .collect(),
        ),
    };
    Node { line, kind }
}

/// The source text of a plain scalar at `location`, when the span is known.
fn source_text(text: &str, location: Location) -> Option<String> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let end = start.checked_add(len)?;
    let slice = text.get(start..end)?.trim();
    (!slice.is_empty()).then(|| slice.to_owned())
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Float)
    }

    fn visit_char<E>(self, v: char) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

/// Text of a scalar key, or `None` for a sequence or mapping used as a key.
pub(super) fn key_text(node: &Node) -> Option<Cow<'_, str>> {
    match &node.kind {
        Kind::Scalar(s) => Some(Cow::Borrowed(&s.text)),
        Kind::Null => Some(Cow::Borrowed("null")),
        Kind::Seq(_) | Kind::Map(_) => None,
    }
}
