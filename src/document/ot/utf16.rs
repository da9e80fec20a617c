//! UTF-16 code units, what JavaScript editors count, converted to and from scalar values at the
//! edge. "a😀b" is 4 code units but 3 scalar values; an offset of 2 in it splits the surrogate
//! pair of 😀 and is refused.

use ropey::Rope;

use super::{Chars, Component, OpError, Operation, Unit};

/// UTF-16 code units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf16;

impl Unit for Utf16 {
    fn len(s: &str) -> usize {
        s.chars().map(char::len_utf16).sum()
    }

    fn byte_index(s: &str, n: usize) -> Option<usize> {
        let mut units = 0;
        for (i, c) in s.char_indices() {
            if units >= n {
                return (units == n).then_some(i);
            }
            units += c.len_utf16();
        }
        (units == n).then_some(s.len())
    }

    fn rope_len(text: &Rope) -> usize {
        text.len_utf16_cu()
    }

    /// Refuses retain and delete boundaries that split a surrogate pair of `text`.
    fn into_chars(op: Operation<Self>, text: &Rope) -> Result<Operation<Chars>, OpError> {
        op.check_base(text.len_utf16_cu())?;
        let mut out = Operation::new();
        let (mut units, mut chars) = (0, 0);
        for component in op.components() {
            let mut advance = |n: usize| {
                let end = units + n;
                let end_chars = text.utf16_cu_to_char(end);
                if text.char_to_utf16_cu(end_chars) != end {
                    return Err(OpError::SplitsSurrogatePair { offset: end });
                }
                let count = end_chars - chars;
                (units, chars) = (end, end_chars);
                Ok(count)
            };
            match component {
                Component::Retain(n) => out.retain(advance(*n)?),
                Component::Delete(n) => out.delete(advance(*n)?),
                Component::Insert(s) => out.insert(s),
            };
        }
        Ok(out)
    }

    fn from_chars(op: &Operation<Chars>, text: &Rope) -> Result<Operation<Self>, OpError> {
        op.check_base(text.len_chars())?;
        let mut out = Operation::new();
        let (mut chars, mut units) = (0, 0);
        for component in op.components() {
            let mut advance = |n: usize| {
                chars += n;
                let end = text.char_to_utf16_cu(chars);
                end - std::mem::replace(&mut units, end)
            };
            match component {
                Component::Retain(n) => out.retain(advance(*n)),
                Component::Delete(n) => out.delete(advance(*n)),
                Component::Insert(s) => out.insert(s),
            };
        }
        Ok(out)
    }

    fn pick<'a>(_: &'a Operation<Chars>, utf16: &'a Operation<Utf16>) -> &'a Operation<Self> {
        utf16
    }
}

impl Operation<Utf16> {
    /// Converts this operation on `text` (counted in UTF-16 code units) to scalar values.
    pub fn to_chars(&self, text: &Rope) -> Result<Operation<Chars>, OpError> {
        Utf16::into_chars(self.clone(), text)
    }
}

impl Operation<Chars> {
    /// Converts this operation on `text` to UTF-16 code units.
    pub fn to_utf16(&self, text: &Rope) -> Result<Operation<Utf16>, OpError> {
        Utf16::from_chars(self, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::ot::tests::{build, edits, text};
    use crate::document::ot::transform;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn lengths_differ_for_emoji() {
        let text = Rope::from_str("a😀b");
        assert_eq!((Utf16::rope_len(&text), Chars::rope_len(&text)), (4, 3));
        assert_eq!((Utf16::len("a😀b"), Chars::len("a😀b")), (4, 3));
        assert_eq!(Utf16::byte_index("a😀b", 2), None);
        assert_eq!(Utf16::byte_index("a😀b", 3), Some(5));
    }

    #[test]
    fn converts_offsets_after_a_surrogate_pair() {
        let text = Rope::from_str("a😀b");
        // Insert "!" before "b": UTF-16 offset 3, scalar offset 2.
        let op16 = Operation::<Utf16>::insert_at(4, 3, "!").unwrap();
        let op = op16.to_chars(&text).unwrap();
        assert_eq!(op, Operation::insert_at(3, 2, "!").unwrap());
        assert_eq!(op.apply_str("a😀b").unwrap(), "a😀!b");
        assert_eq!(op.to_utf16(&text).unwrap(), op16);
        // Deleting the emoji is 2 code units.
        let del16 = Operation::<Utf16>::from_json(
            &json!({"type": "delete", "position": 1, "length": 2}),
            4,
            100,
        )
        .unwrap();
        assert_eq!(
            del16.to_chars(&text).unwrap().apply_str("a😀b").unwrap(),
            "ab"
        );
    }

    #[test]
    fn refuses_offsets_inside_a_surrogate_pair() {
        let text = Rope::from_str("a😀b");
        let split_insert = Operation::<Utf16>::insert_at(4, 2, "x").unwrap();
        assert_eq!(
            split_insert.to_chars(&text),
            Err(OpError::SplitsSurrogatePair { offset: 2 })
        );
        let split_delete = Operation::<Utf16>::delete_at(4, 1, 1).unwrap();
        assert_eq!(
            split_delete.to_chars(&text),
            Err(OpError::SplitsSurrogatePair { offset: 2 })
        );
        // A list whose second edit splits an emoji the first one inserted.
        let list = json!([
            {"type": "insert", "position": 0, "content": "😀"},
            {"type": "insert", "position": 1, "content": "x"},
        ]);
        assert_eq!(
            Operation::<Utf16>::from_json(&list, 0, 100),
            Err(OpError::SplitsSurrogatePair { offset: 1 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(s in text(), a in edits()) {
            let rope = Rope::from_str(&s);
            let op = build(s.chars().count(), &a);
            let op16 = op.to_utf16(&rope)?;
            prop_assert_eq!(op16.base_len(), rope.len_utf16_cu());
            prop_assert_eq!(op16.to_chars(&rope)?, op);
        }

        /// Transforming in UTF-16 and converting gives what transforming scalar values gives,
        /// so clients counting either unit converge with each other.
        #[test]
        fn transform_commutes_with_conversion(s in text(), a in edits(), b in edits()) {
            let rope = Rope::from_str(&s);
            let len = s.chars().count();
            let (a, b) = (build(len, &a), build(len, &b));
            let (a2, b2) = transform(&a, &b)?;
            let (a16, b16) = transform(&a.to_utf16(&rope)?, &b.to_utf16(&rope)?)?;
            let mut after_a = rope.clone();
            a.apply(&mut after_a)?;
            let mut after_b = rope.clone();
            b.apply(&mut after_b)?;
            prop_assert_eq!(b16.to_chars(&after_a)?, b2);
            prop_assert_eq!(a16.to_chars(&after_b)?, a2);
        }
    }
}
