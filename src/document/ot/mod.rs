//! Compound text operations in the ot.js model: build, apply, transform, compose, invert, and
//! the JSON forms clients send.
//!
//! An [`Operation`] walks the whole document it applies to: `Retain(n)` skips `n` units,
//! `Insert(s)` inserts `s`, `Delete(n)` removes `n` units. Its base length (the document it
//! applies to) and target length (the document it produces) are counted in the operation's
//! [`Unit`]: [`Chars`] (Unicode scalar values, what the server uses everywhere) or
//! [`Utf16`](super::Utf16) (code units, what JavaScript editors count; converted at the edge).

use std::fmt;
use std::marker::PhantomData;

use ropey::Rope;
use serde::de::{self, Deserializer};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

mod utf16;
pub use utf16::Utf16;

/// One step of an [`Operation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    /// Keep the next `n` units.
    Retain(usize),
    /// Insert text at the current position.
    Insert(String),
    /// Remove the next `n` units.
    Delete(usize),
}

/// Why an operation could not be parsed, applied, transformed, composed or converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// The operation's base length `expected` differs from the document's length `actual`.
    #[error("operation applies to a document of length {expected}, but the document has length {actual}")]
    BaseLength {
        /// The operation's base length.
        expected: usize,
        /// The document's length.
        actual: usize,
    },
    /// An insert or delete at `position` lies beyond a document of `len` units.
    #[error("position {position} is out of range for a document of length {len}")]
    PositionOutOfRange {
        /// The position (for a delete, its end).
        position: usize,
        /// The document's length.
        len: usize,
    },
    /// A JSON field is missing or has the wrong type or value.
    #[error("\"{field}\" must be {expected}")]
    InvalidField {
        /// Name of the JSON field (`component` for an ot.js array entry).
        field: &'static str,
        /// What the field must be, for the message.
        expected: &'static str,
    },
    /// A simple operation's `type` other than `insert` or `delete`.
    #[error("unknown operation type {0:?}")]
    UnknownType(String),
    /// An empty JSON array.
    #[error("empty operation list")]
    Empty,
    /// The operation's [`size`](Operation::size) (or list length) `size` exceeds the limit `max`.
    #[error("operation size {size} exceeds the limit of {max}")]
    TooLarge {
        /// The operation's size (or the list's length).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A UTF-16 position or length at `offset` falls between the halves of a surrogate pair.
    #[error("UTF-16 offset {offset} splits a surrogate pair")]
    SplitsSurrogatePair {
        /// The offset, in UTF-16 code units.
        offset: usize,
    },
    /// JSON that is not an operation in either form (the reason says what is wrong).
    #[error("malformed operation: {0}")]
    Malformed(&'static str),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Chars {}
    impl Sealed for super::Utf16 {}
}

/// The unit positions and lengths are counted in. Sealed: [`Chars`] and [`Utf16`] are the only
/// units, which lets [`Unit::pick`] choose between the two forms the server logs.
pub trait Unit: sealed::Sealed + Copy + fmt::Debug + Default + Eq + Send + Sync + 'static {
    /// Length of `s` in this unit.
    fn len(s: &str) -> usize;
    /// Byte index in `s` after its first `n` units; `None` if that falls inside a scalar value.
    fn byte_index(s: &str, n: usize) -> Option<usize>;
    /// Length of `text` in this unit.
    fn rope_len(text: &Rope) -> usize;
    /// Converts `op`, which applies to `text`, to scalar values.
    fn into_chars(op: Operation<Self>, text: &Rope) -> Result<Operation<Chars>, OpError>;
    /// Converts `op` (scalar values), which applies to `text`, to this unit.
    fn from_chars(op: &Operation<Chars>, text: &Rope) -> Result<Operation<Self>, OpError>;
    /// Selects this unit's form of an operation the server holds in both.
    fn pick<'a>(chars: &'a Operation<Chars>, utf16: &'a Operation<Utf16>) -> &'a Operation<Self>;
}

/// Unicode scalar values (Rust `char`s): the unit used everywhere inside the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chars;

impl Unit for Chars {
    fn len(s: &str) -> usize {
        s.chars().count()
    }

    fn byte_index(s: &str, n: usize) -> Option<usize> {
        s.char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .nth(n)
    }

    fn rope_len(text: &Rope) -> usize {
        text.len_chars()
    }

    fn into_chars(op: Operation<Self>, text: &Rope) -> Result<Operation<Chars>, OpError> {
        op.check_base(text.len_chars())?;
        Ok(op)
    }

    fn from_chars(op: &Operation<Chars>, text: &Rope) -> Result<Operation<Self>, OpError> {
        op.check_base(text.len_chars())?;
        Ok(op.clone())
    }

    fn pick<'a>(chars: &'a Operation<Chars>, _: &'a Operation<Utf16>) -> &'a Operation<Self> {
        chars
    }
}

/// A compound operation, kept normalized: no empty components, adjacent components of one kind
/// merged, and an insert next to a delete always placed before it — so equal edits compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operation<U: Unit = Chars> {
    components: Vec<Component>,
    base_len: usize,
    target_len: usize,
    unit: PhantomData<U>,
}

impl<U: Unit> Operation<U> {
    /// The empty operation (applies to the empty document).
    pub fn new() -> Self {
        Self::default()
    }

    /// The operation that keeps a document of `len` units unchanged.
    pub fn identity(len: usize) -> Self {
        let mut op = Self::new();
        op.retain(len);
        op
    }

    /// Inserts `text` at `position` of a document of `len` units.
    pub fn insert_at(len: usize, position: usize, text: &str) -> Result<Self, OpError> {
        if position > len {
            return Err(OpError::PositionOutOfRange { position, len });
        }
        let mut op = Self::new();
        op.retain(position).insert(text).retain(len - position);
        Ok(op)
    }

    /// Deletes `count` units at `position` of a document of `len` units.
    pub fn delete_at(len: usize, position: usize, count: usize) -> Result<Self, OpError> {
        match position.checked_add(count) {
            Some(end) if end <= len => {
                let mut op = Self::new();
                op.retain(position).delete(count).retain(len - end);
                Ok(op)
            }
            _ => Err(OpError::PositionOutOfRange {
                position: position.saturating_add(count),
                len,
            }),
        }
    }

    /// The normalized components, in document order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Length of the document this operation applies to.
    pub fn base_len(&self) -> usize {
        self.base_len
    }

    /// Length of the document this operation produces.
    pub fn target_len(&self) -> usize {
        self.target_len
    }

    /// True if applying the operation changes nothing.
    pub fn is_noop(&self) -> bool {
        self.components
            .iter()
            .all(|c| matches!(c, Component::Retain(_)))
    }

    /// What limits bound: components plus inserted units, roughly proportional both to the
    /// JSON encoding and to the work transforming the operation costs.
    pub fn size(&self) -> usize {
        self.components.len()
            + self
                .components
                .iter()
                .map(|c| match c {
                    Component::Insert(s) => U::len(s),
                    _ => 0,
                })
                .sum::<usize>()
    }

    /// Appends a retain of `n` units, merged into a preceding retain (no-op for 0).
    pub fn retain(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        self.target_len += n;
        if let Some(Component::Retain(last)) = self.components.last_mut() {
            *last += n;
        } else {
            self.components.push(Component::Retain(n));
        }
        self
    }

    /// Appends an insert of `text`, placed before a trailing delete and merged into an adjacent
    /// insert (no-op for "").
    pub fn insert(&mut self, text: &str) -> &mut Self {
        if text.is_empty() {
            return self;
        }
        self.target_len += U::len(text);
        let len = self.components.len();
        // Insert-then-delete and delete-then-insert do the same thing; keeping only the first
        // order makes normalized operations unique.
        let slot = match self.components.last() {
            Some(Component::Delete(_)) => len - 1,
            _ => len,
        };
        match slot.checked_sub(1).map(|i| &mut self.components[i]) {
            Some(Component::Insert(prev)) => prev.push_str(text),
            _ => self
                .components
                .insert(slot, Component::Insert(text.to_owned())),
        }
        self
    }

    /// Appends a delete of `n` units, merged into a preceding delete (no-op for 0).
    pub fn delete(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        if let Some(Component::Delete(last)) = self.components.last_mut() {
            *last += n;
        } else {
            self.components.push(Component::Delete(n));
        }
        self
    }

    fn push(&mut self, component: Component) {
        match component {
            Component::Retain(n) => self.retain(n),
            Component::Insert(s) => self.insert(&s),
            Component::Delete(n) => self.delete(n),
        };
    }

    pub(crate) fn check_base(&self, actual: usize) -> Result<(), OpError> {
        if self.base_len == actual {
            Ok(())
        } else {
            Err(OpError::BaseLength {
                expected: self.base_len,
                actual,
            })
        }
    }

    /// Parses a client's operation on a document of `base_len` units: the simple form
    /// (`{"type":"insert","position":p,"content":s}`, `{"type":"delete","position":p,"length":n}`,
    /// or a list of those applied one after another) or the ot.js array form
    /// (`[retain n, "insert", -delete]`). Operations larger than `max_size` (see
    /// [`size`](Self::size)) and lists of more than [`MAX_SIMPLE_OPS`] are refused.
    pub fn from_json(value: &Value, base_len: usize, max_size: usize) -> Result<Self, OpError> {
        let op = match value {
            Value::Object(obj) => simple_op(obj, base_len)?,
            Value::Array(items) if items.is_empty() => return Err(OpError::Empty),
            Value::Array(items) if items.len() > max_size => {
                return Err(OpError::TooLarge {
                    size: items.len(),
                    max: max_size,
                })
            }
            Value::Array(items) if items[0].is_object() => {
                if items.len() > MAX_SIMPLE_OPS {
                    return Err(OpError::TooLarge {
                        size: items.len(),
                        max: MAX_SIMPLE_OPS,
                    });
                }
                let mut op = Self::identity(base_len);
                for item in items {
                    let obj = item.as_object().ok_or(OpError::Malformed(
                        "a list of simple operations may contain only objects",
                    ))?;
                    op = compose(&op, &simple_op(obj, op.target_len)?)?;
                }
                op
            }
            Value::Array(items) => {
                let mut op = Self::new();
                for item in items {
                    op.push(otjs_component(item)?);
                }
                op.check_base(base_len)?;
                op
            }
            _ => return Err(OpError::Malformed("expected an object or an array")),
        };
        match op.size() {
            size if size > max_size => Err(OpError::TooLarge {
                size,
                max: max_size,
            }),
            _ => Ok(op),
        }
    }

    /// The ot.js array form, as broadcast to clients.
    pub fn to_json(&self) -> Value {
        let component = |c: &Component| match c {
            Component::Retain(n) => Value::from(*n),
            Component::Insert(s) => Value::from(s.as_str()),
            Component::Delete(n) => Value::from(-(*n as i64)),
        };
        Value::Array(self.components.iter().map(component).collect())
    }
}

/// Most entries in a list of simple operations: each is composed onto the ones before it, so the
/// work grows with the square of the list's length. Editors send larger changes as one compound
/// operation.
pub const MAX_SIMPLE_OPS: usize = 1_000;

fn simple_op<U: Unit>(obj: &Map<String, Value>, len: usize) -> Result<Operation<U>, OpError> {
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or(OpError::InvalidField {
            field: "type",
            expected: "\"insert\" or \"delete\"",
        })?;
    let position = obj
        .get("position")
        .and_then(Value::as_u64)
        .and_then(|p| usize::try_from(p).ok())
        .ok_or(OpError::InvalidField {
            field: "position",
            expected: "a non-negative integer",
        })?;
    match kind {
        "insert" => {
            let content = obj
                .get("content")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or(OpError::InvalidField {
                    field: "content",
                    expected: "a non-empty string",
                })?;
            Operation::insert_at(len, position, content)
        }
        "delete" => {
            let count = obj
                .get("length")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or(OpError::InvalidField {
                    field: "length",
                    expected: "a positive integer",
                })?;
            Operation::delete_at(len, position, count)
        }
        other => Err(OpError::UnknownType(other.to_owned())),
    }
}

fn otjs_component(item: &Value) -> Result<Component, OpError> {
    const INVALID: OpError = OpError::InvalidField {
        field: "component",
        expected: "a non-zero integer (retain n, delete -n) or a string (insert)",
    };
    match item {
        Value::String(s) => Ok(Component::Insert(s.clone())),
        Value::Number(n) => match n.as_i64() {
            Some(n) if n > 0 => usize::try_from(n)
                .map(Component::Retain)
                .map_err(|_| INVALID),
            Some(n) if n < 0 => usize::try_from(n.unsigned_abs())
                .map(Component::Delete)
                .map_err(|_| INVALID),
            _ => Err(INVALID),
        },
        _ => Err(INVALID),
    }
}

impl Operation<Chars> {
    /// Applies the operation to `text` in place.
    pub fn apply(&self, text: &mut Rope) -> Result<(), OpError> {
        self.check_base(text.len_chars())?;
        let mut pos = 0;
        for component in &self.components {
            match component {
                Component::Retain(n) => pos += n,
                Component::Insert(s) => {
                    text.insert(pos, s);
                    pos += s.chars().count();
                }
                Component::Delete(n) => text.remove(pos..pos + n),
            }
        }
        Ok(())
    }

    /// Applies the operation to a string (tests and small documents).
    pub fn apply_str(&self, text: &str) -> Result<String, OpError> {
        self.check_base(text.chars().count())?;
        let mut chars = text.chars();
        let mut out = String::with_capacity(text.len());
        for component in &self.components {
            match component {
                Component::Retain(n) => out.extend(chars.by_ref().take(*n)),
                Component::Insert(s) => out.push_str(s),
                Component::Delete(n) => chars.by_ref().take(*n).for_each(drop),
            }
        }
        Ok(out)
    }

    /// The operation that undoes this one; `text` is the document before this one applies.
    pub fn invert(&self, text: &Rope) -> Result<Self, OpError> {
        self.check_base(text.len_chars())?;
        let mut inverse = Self::new();
        let mut pos = 0;
        for component in &self.components {
            match component {
                Component::Retain(n) => {
                    inverse.retain(*n);
                    pos += n;
                }
                Component::Insert(s) => {
                    inverse.delete(s.chars().count());
                }
                Component::Delete(n) => {
                    inverse.insert(&text.slice(pos..pos + n).to_string());
                    pos += n;
                }
            }
        }
        Ok(inverse)
    }
}

/// The rest of a component after `taken` units were used, or the next component.
fn rest(
    make: fn(usize) -> Component,
    left: usize,
    next: &mut impl Iterator<Item = Component>,
) -> Option<Component> {
    if left > 0 {
        Some(make(left))
    } else {
        next.next()
    }
}

/// Splits an insert after at most `m` units: the head, what follows it (the rest of the
/// insert or the next component), and how many units the head has.
fn split_insert<U: Unit>(
    mut s: String,
    m: usize,
    next: &mut impl Iterator<Item = Component>,
) -> Result<(String, Option<Component>, usize), OpError> {
    let len = U::len(&s);
    if len <= m {
        return Ok((s, next.next(), len));
    }
    let at = U::byte_index(&s, m).ok_or(OpError::SplitsSurrogatePair { offset: m })?;
    let tail = s.split_off(at);
    Ok((s, Some(Component::Insert(tail)), m))
}

/// Transforms two operations on the same document into `(a', b')` such that applying `a` then
/// `b'` gives the same text as applying `b` then `a'` (TP1).
///
/// Tie-break: when both insert at the same position, `a`'s text ends up left of `b`'s. The
/// server calls `transform(submitted, logged)`, so the submitted operation goes left; clients
/// call `transform(pending, incoming)`, which agrees because a client's pending operation reaches
/// the server after every operation the client has already received.
///
/// Overlapping deletes subtract (the union ends up deleted, nothing twice); text inserted inside
/// a range the other operation deletes survives at the start of that range.
pub fn transform<U: Unit>(
    a: &Operation<U>,
    b: &Operation<U>,
) -> Result<(Operation<U>, Operation<U>), OpError> {
    use Component::{Delete, Insert, Retain};
    let mismatch = OpError::BaseLength {
        expected: a.base_len,
        actual: b.base_len,
    };
    if a.base_len != b.base_len {
        return Err(mismatch);
    }
    let (mut a2, mut b2) = (Operation::new(), Operation::new());
    let (mut ia, mut ib) = (a.components.iter().cloned(), b.components.iter().cloned());
    let (mut x, mut y) = (ia.next(), ib.next());
    loop {
        match (x.take(), y.take()) {
            (None, None) => break,
            // `a`'s insert is handled first: that is what puts `a` left on a tie.
            (Some(Insert(s)), other) => {
                b2.retain(U::len(&s));
                a2.insert(&s);
                (x, y) = (ia.next(), other);
            }
            (other, Some(Insert(s))) => {
                a2.retain(U::len(&s));
                b2.insert(&s);
                (x, y) = (other, ib.next());
            }
            (Some(Retain(n)), Some(Retain(m))) => {
                let k = n.min(m);
                a2.retain(k);
                b2.retain(k);
                (x, y) = (rest(Retain, n - k, &mut ia), rest(Retain, m - k, &mut ib));
            }
            // Both deleted these units: neither side deletes them again.
            (Some(Delete(n)), Some(Delete(m))) => {
                let k = n.min(m);
                (x, y) = (rest(Delete, n - k, &mut ia), rest(Delete, m - k, &mut ib));
            }
            (Some(Delete(n)), Some(Retain(m))) => {
                let k = n.min(m);
                a2.delete(k);
                (x, y) = (rest(Delete, n - k, &mut ia), rest(Retain, m - k, &mut ib));
            }
            (Some(Retain(n)), Some(Delete(m))) => {
                let k = n.min(m);
                b2.delete(k);
                (x, y) = (rest(Retain, n - k, &mut ia), rest(Delete, m - k, &mut ib));
            }
            // Unreachable for operations built by `Operation`, whose lengths add up.
            (None, Some(_)) | (Some(_), None) => return Err(mismatch),
        }
    }
    Ok((a2, b2))
}

/// Combines `a` and then `b` into one operation: applying it equals applying `a`, then `b`.
pub fn compose<U: Unit>(a: &Operation<U>, b: &Operation<U>) -> Result<Operation<U>, OpError> {
    use Component::{Delete, Insert, Retain};
    let mismatch = OpError::BaseLength {
        expected: b.base_len,
        actual: a.target_len,
    };
    if a.target_len != b.base_len {
        return Err(mismatch);
    }
    let mut out = Operation::new();
    let (mut ia, mut ib) = (a.components.iter().cloned(), b.components.iter().cloned());
    let (mut x, mut y) = (ia.next(), ib.next());
    loop {
        match (x.take(), y.take()) {
            (None, None) => break,
            // `b` never sees what `a` deleted, and `a` never sees what `b` inserts.
            (Some(Delete(n)), other) => {
                out.delete(n);
                (x, y) = (ia.next(), other);
            }
            (other, Some(Insert(s))) => {
                out.insert(&s);
                (x, y) = (other, ib.next());
            }
            (Some(Retain(n)), Some(Retain(m))) => {
                let k = n.min(m);
                out.retain(k);
                (x, y) = (rest(Retain, n - k, &mut ia), rest(Retain, m - k, &mut ib));
            }
            (Some(Retain(n)), Some(Delete(m))) => {
                let k = n.min(m);
                out.delete(k);
                (x, y) = (rest(Retain, n - k, &mut ia), rest(Delete, m - k, &mut ib));
            }
            // `b` keeps or deletes (part of) what `a` inserted.
            (Some(Insert(s)), Some(Retain(m))) => {
                let (head, tail, k) = split_insert::<U>(s, m, &mut ia)?;
                out.insert(&head);
                (x, y) = (tail, rest(Retain, m - k, &mut ib));
            }
            (Some(Insert(s)), Some(Delete(m))) => {
                let (_, tail, k) = split_insert::<U>(s, m, &mut ia)?;
                (x, y) = (tail, rest(Delete, m - k, &mut ib));
            }
            (None, Some(_)) | (Some(_), None) => return Err(mismatch),
        }
    }
    Ok(out)
}

impl<U: Unit> Serialize for Operation<U> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.components.len()))?;
        for component in &self.components {
            match component {
                Component::Retain(n) => seq.serialize_element(n)?,
                Component::Insert(s) => seq.serialize_element(s)?,
                Component::Delete(n) => seq.serialize_element(&-(*n as i64))?,
            }
        }
        seq.end()
    }
}

/// Reads the ot.js array form without size limits: meant for the server's own log and
/// snapshots. Client input goes through [`Operation::from_json`].
impl<'de, U: Unit> Deserialize<'de> for Operation<U> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = Vec::<Value>::deserialize(deserializer)?;
        let mut op = Self::new();
        for item in &items {
            op.push(otjs_component(item).map_err(de::Error::custom)?);
        }
        Ok(op)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Checks TP1 for `a` and `b` on `text` and returns the converged text.
    fn converge(text: &str, a: &Operation, b: &Operation) -> String {
        let (a2, b2) = transform(a, b).unwrap();
        let left = b2.apply_str(&a.apply_str(text).unwrap()).unwrap();
        let right = a2.apply_str(&b.apply_str(text).unwrap()).unwrap();
        assert_eq!(left, right, "TP1 on {text:?}: a={a:?} b={b:?}");
        left
    }

    #[test]
    fn builder_normalizes() {
        let mut a = Operation::<Chars>::new();
        a.retain(0)
            .retain(2)
            .retain(1)
            .delete(1)
            .insert("x")
            .insert("")
            .delete(2)
            .insert("y");
        use Component::*;
        assert_eq!(a.components(), &[Retain(3), Insert("xy".into()), Delete(3)]);
        assert_eq!((a.base_len(), a.target_len()), (6, 5));
        let mut b = Operation::<Chars>::new();
        b.retain(3).insert("xy").delete(3);
        assert_eq!(a, b);
    }

    #[test]
    fn overlapping_deletes_subtract() {
        // 'abcdef': one user deletes "bc", another "cd".
        let a = Operation::delete_at(6, 1, 2).unwrap();
        let b = Operation::delete_at(6, 2, 2).unwrap();
        assert_eq!(converge("abcdef", &a, &b), "aef");
        assert_eq!(converge("abcdef", &b, &a), "aef");
    }

    #[test]
    fn insert_inside_deleted_range_survives() {
        // 'abcdef': delete "bcd" while another user inserts "X" at 2.
        let del = Operation::delete_at(6, 1, 3).unwrap();
        let ins = Operation::insert_at(6, 2, "X").unwrap();
        assert_eq!(converge("abcdef", &del, &ins), "aXef");
        assert_eq!(converge("abcdef", &ins, &del), "aXef");
    }

    #[test]
    fn same_position_inserts_put_first_argument_left() {
        let a = Operation::insert_at(2, 1, "A").unwrap();
        let b = Operation::insert_at(2, 1, "B").unwrap();
        assert_eq!(converge("xy", &a, &b), "xABy");
        assert_eq!(converge("xy", &b, &a), "xBAy");
    }

    #[test]
    fn combining_accent_is_its_own_scalar() {
        // "e" + U+0301 renders as one grapheme but is two scalar values, so positions after it
        // count both and concurrent edits around it converge.
        let accent = Operation::insert_at(3, 1, "\u{301}").unwrap();
        let after = Operation::insert_at(3, 1, "x").unwrap();
        let delete_e = Operation::delete_at(3, 0, 1).unwrap();
        assert_eq!(converge("ebc", &accent, &after), "e\u{301}xbc");
        assert_eq!(converge("ebc", &accent, &delete_e), "\u{301}bc");
        let accented = accent.apply_str("ebc").unwrap();
        assert_eq!(accented.chars().count(), 4);
        let delete_b = Operation::delete_at(4, 2, 1).unwrap();
        let append = Operation::insert_at(4, 4, "!").unwrap();
        assert_eq!(converge(&accented, &delete_b, &append), "e\u{301}c!");
    }

    #[test]
    fn mismatched_lengths_are_errors_not_panics() {
        let a = Operation::<Chars>::identity(3);
        let b = Operation::<Chars>::identity(4);
        assert!(matches!(transform(&a, &b), Err(OpError::BaseLength { .. })));
        assert!(matches!(compose(&a, &b), Err(OpError::BaseLength { .. })));
        assert!(matches!(a.apply_str("ab"), Err(OpError::BaseLength { .. })));
    }

    #[test]
    fn compose_and_invert() {
        let a = Operation::insert_at(3, 3, "def").unwrap();
        let b = Operation::delete_at(6, 1, 3).unwrap();
        let ab = compose(&a, &b).unwrap();
        assert_eq!(ab.apply_str("abc").unwrap(), "aef");
        let text = Rope::from_str("abc");
        let undo = ab.invert(&text).unwrap();
        assert_eq!(undo.apply_str("aef").unwrap(), "abc");
    }

    #[test]
    fn parses_simple_forms() {
        let ins = json!({"type": "insert", "position": 1, "content": "😀"});
        let op = Operation::<Chars>::from_json(&ins, 3, 100).unwrap();
        assert_eq!(op.apply_str("abc").unwrap(), "a😀bc");
        let del = json!({"type": "delete", "position": 1, "length": 2});
        let op = Operation::<Chars>::from_json(&del, 3, 100).unwrap();
        assert_eq!(op.apply_str("abc").unwrap(), "a");
        // A list applies in order: the delete's position counts the insert before it.
        let list = json!([
            {"type": "insert", "position": 0, "content": "XY"},
            {"type": "delete", "position": 3, "length": 1},
        ]);
        let op = Operation::<Chars>::from_json(&list, 3, 100).unwrap();
        assert_eq!(op.apply_str("abc").unwrap(), "XYac");
    }

    #[test]
    fn parses_and_writes_otjs_form() {
        let value = json!([1, "x", -2, 3]);
        let op = Operation::<Chars>::from_json(&value, 6, 100).unwrap();
        assert_eq!(op.apply_str("abcdef").unwrap(), "axdef");
        assert_eq!(op.to_json(), value);
        let back: Operation = serde_json::from_value(value).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn rejects_bad_json() {
        let parse = |v: Value, len| Operation::<Chars>::from_json(&v, len, 10);
        fn field(name: &'static str) -> impl Fn(OpError) -> bool {
            move |e| matches!(e, OpError::InvalidField { field, .. } if field == name)
        }
        assert!(matches!(
            parse(json!({"type": "insert", "position": 4, "content": "x"}), 3),
            Err(OpError::PositionOutOfRange {
                position: 4,
                len: 3
            })
        ));
        assert!(matches!(
            parse(json!({"type": "delete", "position": 2, "length": 2}), 3),
            Err(OpError::PositionOutOfRange { .. })
        ));
        assert!(
            parse(json!({"type": "delete", "position": 0, "length": 0}), 3)
                .is_err_and(field("length"))
        );
        assert!(
            parse(json!({"type": "delete", "position": 0, "length": -1}), 3)
                .is_err_and(field("length"))
        );
        assert!(
            parse(json!({"type": "insert", "position": -1, "content": "x"}), 3)
                .is_err_and(field("position"))
        );
        assert!(
            parse(json!({"type": "insert", "position": 0, "content": ""}), 3)
                .is_err_and(field("content"))
        );
        assert!(parse(json!({"type": "insert", "position": 0}), 3).is_err_and(field("content")));
        assert_eq!(
            parse(json!({"type": "move", "position": 0}), 3),
            Err(OpError::UnknownType("move".into()))
        );
        assert_eq!(parse(json!([]), 0), Err(OpError::Empty));
        assert!(parse(json!([1, 0, 2]), 3).is_err_and(field("component")));
        assert!(parse(json!([1.5]), 3).is_err_and(field("component")));
        assert!(matches!(
            parse(json!([2, "x"]), 3),
            Err(OpError::BaseLength {
                expected: 2,
                actual: 3
            })
        ));
        assert!(matches!(
            parse(json!([3, "much too long text"]), 3),
            Err(OpError::TooLarge { max: 10, .. })
        ));
        assert!(matches!(
            parse(
                json!([{"type": "insert", "position": 0, "content": "x"}, 3]),
                3
            ),
            Err(OpError::Malformed(_))
        ));
        assert!(matches!(parse(json!("x"), 3), Err(OpError::Malformed(_))));
        let long_list = vec![json!({"type": "insert", "position": 0, "content": "x"}); 1001];
        assert_eq!(
            Operation::<Chars>::from_json(&Value::Array(long_list), 0, usize::MAX),
            Err(OpError::TooLarge {
                size: 1001,
                max: MAX_SIMPLE_OPS
            })
        );
    }

    /// Text over an alphabet with emoji (surrogate pairs in UTF-16), a combining accent and
    /// a precomposed letter.
    pub(crate) fn text() -> impl Strategy<Value = String> {
        let alphabet = vec!['a', 'b', 'e', '\u{301}', 'é', '😀', '👍', '\n'];
        prop::collection::vec(prop::sample::select(alphabet), 0..12)
            .prop_map(|chars| chars.into_iter().collect())
    }

    /// Random edits, interpreted against whatever text they are applied to.
    pub(crate) fn edits() -> impl Strategy<Value = Vec<(u8, usize, String)>> {
        prop::collection::vec((0u8..3, 1usize..6, text()), 0..6)
    }

    pub(crate) fn build(len: usize, edits: &[(u8, usize, String)]) -> Operation {
        let mut op = Operation::new();
        let mut left = len;
        for (kind, n, s) in edits {
            let n = (*n).min(left);
            match kind {
                0 => op.retain(n),
                1 => op.delete(n),
                _ => op.insert(s),
            };
            left -= if *kind < 2 { n } else { 0 };
        }
        op.retain(left);
        op
    }

    proptest! {
        #[test]
        fn tp1(s in text(), a in edits(), b in edits()) {
            let len = s.chars().count();
            let (a, b) = (build(len, &a), build(len, &b));
            converge(&s, &a, &b);
        }

        #[test]
        fn compose_equals_sequential_apply(s in text(), a in edits(), b in edits()) {
            let a = build(s.chars().count(), &a);
            let b = build(a.target_len(), &b);
            let ab = compose(&a, &b).unwrap();
            prop_assert_eq!(ab.apply_str(&s)?, b.apply_str(&a.apply_str(&s)?)?);
        }

        #[test]
        fn rope_apply_invert_and_json_agree(s in text(), a in edits()) {
            let a = build(s.chars().count(), &a);
            let mut rope = Rope::from_str(&s);
            let undo = a.invert(&rope)?;
            a.apply(&mut rope)?;
            prop_assert_eq!(rope.to_string(), a.apply_str(&s)?);
            prop_assert_eq!(undo.apply_str(&rope.to_string())?, s.clone());
            let back: Operation = serde_json::from_value(a.to_json()).unwrap();
            prop_assert_eq!(&back, &a);
            if !a.components().is_empty() {
                prop_assert_eq!(Operation::from_json(&a.to_json(), a.base_len(), usize::MAX)?, a);
            }
        }
    }
}
