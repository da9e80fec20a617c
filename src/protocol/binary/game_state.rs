//! `game_state` / `game_update`: a snapshot of positions and objects (all little-endian).
//!
//! ```text
//! u32 position_count, u32 object_count,
//! position_count x { u32 player_id, f32 x, f32 y }            (12 bytes each)
//! object_count   x { u32 len, then len bytes:
//!                    u16 type_len, type (UTF-8), f32 x, f32 y, data (the rest) }
//! ```
//!
//! [`GameState::parse`] validates a message completely (lengths and counts agree exactly,
//! coordinates finite and inside the world bounds, counts and object data under the limits,
//! object types from the configured set) and hands out views into the same bytes: position
//! records are read in place with `bytemuck` whatever the buffer's alignment, objects are decoded
//! lazily from the validated bytes. Parsing performs no heap allocation.

use bytemuck::{Pod, Zeroable};
use std::collections::HashMap;

/// `position_count` and `object_count`.
pub const HEADER_LEN: usize = 8;
/// One `{u32 player_id, f32 x, f32 y}` record.
pub const POSITION_LEN: usize = 12;
/// An object record's fixed part after its `u32 len`: `u16 type_len`, `f32 x`, `f32 y`.
pub const OBJECT_FIXED_LEN: usize = 2 + 4 + 4;

/// One position record, read in place: byte-array fields make it 1-aligned, so a slice of
/// records can be cast from any byte offset.
#[derive(Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Position {
    player_id: [u8; 4],
    x: [u8; 4],
    y: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<Position>() == POSITION_LEN);
const _: () = assert!(std::mem::align_of::<Position>() == 1);

impl Position {
    /// A record of `player_id` at (`x`, `y`).
    pub fn new(player_id: u32, x: f32, y: f32) -> Position {
        Position {
            player_id: player_id.to_le_bytes(),
            x: x.to_le_bytes(),
            y: y.to_le_bytes(),
        }
    }

    /// The player this position is of.
    pub fn player_id(&self) -> u32 {
        u32::from_le_bytes(self.player_id)
    }

    /// X coordinate.
    pub fn x(&self) -> f32 {
        f32::from_le_bytes(self.x)
    }

    /// Y coordinate.
    pub fn y(&self) -> f32 {
        f32::from_le_bytes(self.y)
    }
}

impl std::fmt::Debug for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Position")
            .field("player_id", &self.player_id())
            .field("x", &self.x())
            .field("y", &self.y())
            .finish()
    }
}

/// The playing field; coordinates outside it (or not finite) are refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorldBounds {
    /// Smallest x allowed (inclusive).
    pub min_x: f32,
    /// Largest x allowed (inclusive).
    pub max_x: f32,
    /// Smallest y allowed (inclusive).
    pub min_y: f32,
    /// Largest y allowed (inclusive).
    pub max_y: f32,
}

impl WorldBounds {
    /// Every finite coordinate.
    pub const UNBOUNDED: WorldBounds = WorldBounds {
        min_x: f32::MIN,
        max_x: f32::MAX,
        min_y: f32::MIN,
        max_y: f32::MAX,
    };

    fn check(&self, x: f32, y: f32) -> Result<(), CoordError> {
        if !x.is_finite() || !y.is_finite() {
            Err(CoordError::NotFinite)
        } else if x < self.min_x || x > self.max_x || y < self.min_y || y > self.max_y {
            Err(CoordError::OutOfBounds)
        } else {
            Ok(())
        }
    }
}

enum CoordError {
    NotFinite,
    OutOfBounds,
}

/// The object types a message may name. Looking a name up never stores it: input cannot grow
/// this set.
#[derive(Debug, Clone)]
pub struct ObjectTypes {
    /// `None`: any UTF-8 name (client-side decoding of states the server already checked).
    names: Option<HashMap<Box<[u8]>, u16>>,
    list: Vec<Box<str>>,
}

impl ObjectTypes {
    /// Exactly these names (at most 65535 of them; each 1 to 65535 bytes).
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> ObjectTypes {
        let mut map = HashMap::new();
        let mut list = Vec::new();
        for name in names {
            let name = name.as_ref();
            if name.is_empty()
                || name.len() > usize::from(u16::MAX)
                || map.contains_key(name.as_bytes())
            {
                continue;
            }
            let Ok(index) = u16::try_from(list.len()) else {
                break;
            };
            map.insert(Box::from(name.as_bytes()), index);
            list.push(Box::from(name));
        }
        ObjectTypes {
            names: Some(map),
            list,
        }
    }

    /// Any UTF-8 type name.
    pub fn any() -> ObjectTypes {
        ObjectTypes {
            names: None,
            list: Vec::new(),
        }
    }

    /// The configured names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|s| &**s)
    }

    /// Whether `name` is allowed.
    pub fn contains(&self, name: &[u8]) -> bool {
        match &self.names {
            Some(map) => map.contains_key(name),
            None => std::str::from_utf8(name).is_ok(),
        }
    }
}

/// What [`GameState::parse`] accepts.
#[derive(Debug, Clone)]
pub struct GameStateLimits {
    /// Where positions and objects must lie.
    pub bounds: WorldBounds,
    /// Most position records in one message.
    pub max_positions: u32,
    /// Most object records in one message.
    pub max_objects: u32,
    /// Largest `data` of one object, in bytes.
    pub max_object_data: u32,
    /// The object types a message may name.
    pub object_types: ObjectTypes,
}

impl GameStateLimits {
    /// Anything well-formed with finite coordinates, up to `u32::MAX` records (client-side
    /// decoding, tests).
    pub fn permissive() -> GameStateLimits {
        GameStateLimits {
            bounds: WorldBounds::UNBOUNDED,
            max_positions: u32::MAX,
            max_objects: u32::MAX,
            max_object_data: u32::MAX,
            object_types: ObjectTypes::any(),
        }
    }
}

/// Why a `game_state` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameStateError {
    /// The message is `len` bytes, shorter than [`HEADER_LEN`].
    #[error("message is {len} bytes, shorter than the 8-byte header")]
    MissingHeader {
        /// The message's length, in bytes.
        len: usize,
    },
    /// The header's `position_count` is `count`, over the limit of `max`.
    #[error("{count} positions, more than the limit of {max}")]
    TooManyPositions {
        /// The header's `position_count`.
        count: u32,
        /// [`GameStateLimits::max_positions`].
        max: u32,
    },
    /// The header's `object_count` is `count`, over the limit of `max`.
    #[error("{count} objects, more than the limit of {max}")]
    TooManyObjects {
        /// The header's `object_count`.
        count: u32,
        /// [`GameStateLimits::max_objects`].
        max: u32,
    },
    /// The message ends before its position records do.
    #[error("{count} positions need {needed} bytes after the header, the message has {available}")]
    PositionsTruncated {
        /// The header's `position_count`.
        count: u32,
        /// Bytes the position records take (`count` × [`POSITION_LEN`], saturating).
        needed: usize,
        /// Bytes left after the header.
        available: usize,
    },
    /// Position `index` has a NaN or infinite coordinate.
    #[error("position {index}: coordinates are not finite")]
    PositionNotFinite {
        /// The position's index, from 0.
        index: u32,
    },
    /// Position `index` lies outside the world bounds.
    #[error("position {index}: coordinates are outside the world bounds")]
    PositionOutOfBounds {
        /// The position's index, from 0.
        index: u32,
    },
    /// The message ends inside object `index` (its length or its record).
    #[error("object {index}: the message ends inside its record")]
    ObjectTruncated {
        /// The object's index, from 0.
        index: u32,
    },
    /// Object `index` declares a record of `len` bytes, less than [`OBJECT_FIXED_LEN`].
    #[error("object {index}: record length {len} is shorter than its fixed fields (10 bytes)")]
    ObjectTooShort {
        /// The object's index, from 0.
        index: u32,
        /// The record length it declares.
        len: u32,
    },
    /// Object `index`: its `type_len`-byte type and coordinates overrun its `len`-byte record.
    #[error("object {index}: type length {type_len} does not fit the record length {len}")]
    ObjectTypeOverrun {
        /// The object's index, from 0.
        index: u32,
        /// The type name's declared length.
        type_len: u16,
        /// The record length it declares.
        len: u32,
    },
    /// Object `index` names a type that is not configured.
    #[error("object {index}: the type is not one of the configured object types")]
    UnknownObjectType {
        /// The object's index, from 0.
        index: u32,
    },
    /// Object `index` has `len` bytes of data, over the limit of `max`.
    #[error("object {index}: {len} bytes of data, more than the limit of {max}")]
    ObjectDataTooLarge {
        /// The object's index, from 0.
        index: u32,
        /// Bytes of data.
        len: usize,
        /// [`GameStateLimits::max_object_data`].
        max: u32,
    },
    /// Object `index` has a NaN or infinite coordinate.
    #[error("object {index}: coordinates are not finite")]
    ObjectNotFinite {
        /// The object's index, from 0.
        index: u32,
    },
    /// Object `index` lies outside the world bounds.
    #[error("object {index}: coordinates are outside the world bounds")]
    ObjectOutOfBounds {
        /// The object's index, from 0.
        index: u32,
    },
    /// `extra` bytes follow the last object record.
    #[error("{extra} bytes after the last record")]
    TrailingBytes {
        /// Bytes after the last record.
        extra: usize,
    },
}

impl GameStateError {
    /// A stable machine-readable reason, for error replies.
    pub fn code(&self) -> &'static str {
        use GameStateError::*;
        match self {
            MissingHeader { .. }
            | PositionsTruncated { .. }
            | ObjectTruncated { .. }
            | ObjectTooShort { .. }
            | ObjectTypeOverrun { .. }
            | TrailingBytes { .. } => "malformed",
            TooManyPositions { .. } | TooManyObjects { .. } | ObjectDataTooLarge { .. } => {
                "over_limit"
            }
            PositionNotFinite { .. } | ObjectNotFinite { .. } => "not_finite",
            PositionOutOfBounds { .. } | ObjectOutOfBounds { .. } => "out_of_bounds",
            UnknownObjectType { .. } => "unknown_object_type",
        }
    }
}

/// A validated game state: views into the message bytes.
#[derive(Debug, Clone, Copy)]
pub struct GameState<'a> {
    bytes: &'a [u8],
    positions: &'a [Position],
    objects: &'a [u8],
    object_count: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn f32_at(bytes: &[u8], at: usize) -> Option<f32> {
    u32_at(bytes, at).map(f32::from_bits)
}

impl<'a> GameState<'a> {
    /// Validates `bytes` as one game state under `limits`, without copying or allocating.
    pub fn parse(
        bytes: &'a [u8],
        limits: &GameStateLimits,
    ) -> Result<GameState<'a>, GameStateError> {
        use GameStateError::*;
        let (Some(position_count), Some(object_count)) = (u32_at(bytes, 0), u32_at(bytes, 4))
        else {
            return Err(MissingHeader { len: bytes.len() });
        };
        if position_count > limits.max_positions {
            return Err(TooManyPositions {
                count: position_count,
                max: limits.max_positions,
            });
        }
        if object_count > limits.max_objects {
            return Err(TooManyObjects {
                count: object_count,
                max: limits.max_objects,
            });
        }
        let rest = &bytes[HEADER_LEN..];
        let truncated = || PositionsTruncated {
            count: position_count,
            needed: (position_count as usize).saturating_mul(POSITION_LEN),
            available: rest.len(),
        };
        let needed = (position_count as usize)
            .checked_mul(POSITION_LEN)
            .ok_or_else(truncated)?;
        let position_bytes = rest.get(..needed).ok_or_else(truncated)?;
        // 1-aligned records of exactly 12 bytes: the cast cannot fail, but is checked anyway.
        let positions: &[Position] =
            bytemuck::try_cast_slice(position_bytes).map_err(|_| truncated())?;
        for (index, p) in (0u32..).zip(positions) {
            limits.bounds.check(p.x(), p.y()).map_err(|e| match e {
                CoordError::NotFinite => PositionNotFinite { index },
                CoordError::OutOfBounds => PositionOutOfBounds { index },
            })?;
        }
        let objects = &rest[needed..];
        let mut at = 0usize;
        for index in 0..object_count {
            let len = u32_at(objects, at).ok_or(ObjectTruncated { index })?;
            let start = at + 4;
            let record = start
                .checked_add(len as usize)
                .and_then(|end| objects.get(start..end))
                .ok_or(ObjectTruncated { index })?;
            check_object(record, index, len, limits)?;
            at = start + record.len();
        }
        if at != objects.len() {
            return Err(TrailingBytes {
                extra: objects.len() - at,
            });
        }
        Ok(GameState {
            bytes,
            positions,
            objects,
            object_count,
        })
    }

    /// The whole message (what is relayed as `game_update`).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The position records, in place in the message.
    pub fn positions(&self) -> &'a [Position] {
        self.positions
    }

    /// Number of object records.
    pub fn object_count(&self) -> u32 {
        self.object_count
    }

    /// The object records, decoded one by one as iterated.
    pub fn objects(&self) -> Objects<'a> {
        Objects {
            bytes: self.objects,
            left: self.object_count,
        }
    }
}

fn check_object(
    record: &[u8],
    index: u32,
    len: u32,
    limits: &GameStateLimits,
) -> Result<(), GameStateError> {
    use GameStateError::*;
    if record.len() < OBJECT_FIXED_LEN {
        return Err(ObjectTooShort { index, len });
    }
    let type_len = u16_at(record, 0).ok_or(ObjectTooShort { index, len })?;
    let type_end = 2 + usize::from(type_len);
    if type_end + 8 > record.len() {
        return Err(ObjectTypeOverrun {
            index,
            type_len,
            len,
        });
    }
    if !limits.object_types.contains(&record[2..type_end]) {
        return Err(UnknownObjectType { index });
    }
    let data_len = record.len() - type_end - 8;
    if data_len > limits.max_object_data as usize {
        return Err(ObjectDataTooLarge {
            index,
            len: data_len,
            max: limits.max_object_data,
        });
    }
    let (x, y) = (
        f32_at(record, type_end).unwrap_or(f32::NAN),
        f32_at(record, type_end + 4).unwrap_or(f32::NAN),
    );
    limits.bounds.check(x, y).map_err(|e| match e {
        CoordError::NotFinite => ObjectNotFinite { index },
        CoordError::OutOfBounds => ObjectOutOfBounds { index },
    })
}

/// One object of a validated state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object<'a> {
    /// The object type, one of the configured [`ObjectTypes`].
    pub kind: &'a str,
    /// X coordinate, finite and within the world bounds.
    pub x: f32,
    /// Y coordinate, finite and within the world bounds.
    pub y: f32,
    /// The record's bytes after the coordinates (opaque, at most `max_object_data`).
    pub data: &'a [u8],
}

/// The objects of a [`GameState`], decoded from its validated bytes.
#[derive(Debug, Clone)]
pub struct Objects<'a> {
    bytes: &'a [u8],
    left: u32,
}

impl<'a> Iterator for Objects<'a> {
    type Item = Object<'a>;

    fn next(&mut self) -> Option<Object<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = u32_at(self.bytes, 0)? as usize;
        let record = self.bytes.get(4..4 + len)?;
        self.bytes = &self.bytes[4 + len..];
        let type_end = 2 + usize::from(u16_at(record, 0)?);
        Some(Object {
            kind: std::str::from_utf8(record.get(2..type_end)?).ok()?,
            x: f32_at(record, type_end)?,
            y: f32_at(record, type_end + 4)?,
            data: record.get(type_end + 8..)?,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// An object to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectRecord<'a> {
    /// The object type name (at most 65535 bytes).
    pub kind: &'a str,
    /// X coordinate.
    pub x: f32,
    /// Y coordinate.
    pub y: f32,
    /// Opaque object data, written after the coordinates.
    pub data: &'a [u8],
}

/// Why a state cannot be encoded in this layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameStateEncodeError {
    /// More than `u32::MAX` positions or objects.
    #[error("more than u32::MAX records")]
    TooManyRecords,
    /// An object's type name is over 65535 bytes (its length is a `u16`).
    #[error("an object type longer than 65535 bytes")]
    TypeTooLong,
    /// An object's record (fixed fields, type and data) is over `u32::MAX` bytes.
    #[error("an object record longer than u32::MAX bytes")]
    ObjectTooLong,
}

/// The encoded size of a state.
pub fn encoded_len(positions: &[Position], objects: &[ObjectRecord<'_>]) -> usize {
    HEADER_LEN
        + positions.len() * POSITION_LEN
        + objects
            .iter()
            .map(|o| 4 + OBJECT_FIXED_LEN + o.kind.len() + o.data.len())
            .sum::<usize>()
}

/// Appends the encoding of a state to `out` (the client side of `game_state`).
pub fn encode(
    positions: &[Position],
    objects: &[ObjectRecord<'_>],
    out: &mut Vec<u8>,
) -> Result<(), GameStateEncodeError> {
    let pc = u32::try_from(positions.len()).map_err(|_| GameStateEncodeError::TooManyRecords)?;
    let oc = u32::try_from(objects.len()).map_err(|_| GameStateEncodeError::TooManyRecords)?;
    for o in objects {
        u16::try_from(o.kind.len()).map_err(|_| GameStateEncodeError::TypeTooLong)?;
        u32::try_from(OBJECT_FIXED_LEN + o.kind.len() + o.data.len())
            .map_err(|_| GameStateEncodeError::ObjectTooLong)?;
    }
    out.reserve(encoded_len(positions, objects));
    out.extend_from_slice(&pc.to_le_bytes());
    out.extend_from_slice(&oc.to_le_bytes());
    out.extend_from_slice(bytemuck::cast_slice(positions));
    for o in objects {
        let len = (OBJECT_FIXED_LEN + o.kind.len() + o.data.len()) as u32;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(o.kind.len() as u16).to_le_bytes());
        out.extend_from_slice(o.kind.as_bytes());
        out.extend_from_slice(&o.x.to_le_bytes());
        out.extend_from_slice(&o.y.to_le_bytes());
        out.extend_from_slice(o.data);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> GameStateLimits {
        GameStateLimits {
            bounds: WorldBounds {
                min_x: -100.0,
                max_x: 100.0,
                min_y: -50.0,
                max_y: 50.0,
            },
            max_positions: 8,
            max_objects: 4,
            max_object_data: 16,
            object_types: ObjectTypes::new(["bullet", "pickup"]),
        }
    }

    fn encoded(positions: &[Position], objects: &[ObjectRecord<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(positions, objects, &mut out).unwrap();
        out
    }

    fn sample() -> Vec<u8> {
        encoded(
            &[Position::new(1, 1.5, -2.0), Position::new(7, 100.0, 50.0)],
            &[ObjectRecord {
                kind: "bullet",
                x: 3.0,
                y: 4.0,
                data: &[9, 9],
            }],
        )
    }

    #[test]
    fn known_bytes() {
        let bytes = encoded(
            &[Position::new(1, 1.0, 2.0)],
            &[ObjectRecord {
                kind: "pickup",
                x: -1.0,
                y: 0.5,
                data: &[0xAA],
            }],
        );
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[1, 0, 0, 0, 1, 0, 0, 0][..],            // counts
            &[1, 0, 0, 0], &1.0f32.to_le_bytes(), &2.0f32.to_le_bytes(),
            &[17, 0, 0, 0],                            // object len = 2 + 6 + 8 + 1
            &[6, 0], b"pickup", &(-1.0f32).to_le_bytes(), &0.5f32.to_le_bytes(), &[0xAA],
        ].concat();
        assert_eq!(bytes, expected);
        let state = GameState::parse(&bytes, &limits()).unwrap();
        assert_eq!(state.positions()[0].player_id(), 1);
        let objects: Vec<_> = state.objects().collect();
        assert_eq!(
            objects,
            vec![Object {
                kind: "pickup",
                x: -1.0,
                y: 0.5,
                data: &[0xAA]
            }]
        );
    }

    #[test]
    fn parses_at_every_alignment_without_copying() {
        let bytes = sample();
        for offset in 0..8 {
            let mut buf = vec![0u8; offset];
            buf.extend_from_slice(&bytes);
            let msg = &buf[offset..];
            let state = GameState::parse(msg, &limits()).unwrap();
            assert_eq!(state.positions().len(), 2);
            assert_eq!(state.positions()[1].player_id(), 7);
            assert_eq!(state.positions()[1].x(), 100.0);
            // The records are the message's own bytes.
            assert_eq!(
                state.positions().as_ptr() as *const u8,
                msg[HEADER_LEN..].as_ptr()
            );
            assert_eq!(state.as_bytes().as_ptr(), msg.as_ptr());
        }
    }

    #[test]
    fn every_rule_is_enforced() {
        use GameStateError::*;
        let l = limits();
        let parse = |b: &[u8]| GameState::parse(b, &l).map(|_| ());
        assert_eq!(parse(&[1, 0, 0]), Err(MissingHeader { len: 3 }));
        assert_eq!(parse(&encoded(&[], &[])), Ok(()));

        let mut b = sample();
        b[0] = 9;
        assert_eq!(parse(&b), Err(TooManyPositions { count: 9, max: 8 }));
        let mut b = sample();
        b[4] = 5;
        assert_eq!(parse(&b), Err(TooManyObjects { count: 5, max: 4 }));
        let mut b = sample();
        b[0] = 3;
        assert!(parse(&b).is_err(), "counts that disagree with the records");
        let b = encoded(&[Position::new(1, 0.0, 0.0)], &[]);
        assert_eq!(parse(&b[..b.len() - 1]).unwrap_err().code(), "malformed");
        let mut b = b.clone();
        b.push(0);
        assert_eq!(parse(&b), Err(TrailingBytes { extra: 1 }));

        for (x, y, err) in [
            (f32::NAN, 0.0, PositionNotFinite { index: 0 }),
            (0.0, f32::INFINITY, PositionNotFinite { index: 0 }),
            (100.5, 0.0, PositionOutOfBounds { index: 0 }),
            (0.0, -50.01, PositionOutOfBounds { index: 0 }),
        ] {
            assert_eq!(parse(&encoded(&[Position::new(1, x, y)], &[])), Err(err));
        }
        let obj = |kind, x, y, data: &'static [u8]| ObjectRecord { kind, x, y, data };
        assert_eq!(
            parse(&encoded(&[], &[obj("rocket", 0.0, 0.0, &[])])),
            Err(UnknownObjectType { index: 0 })
        );
        assert_eq!(
            parse(&encoded(
                &[],
                &[obj("bullet", 0.0, 0.0, &[]), obj("bulle", 0.0, 0.0, &[])]
            )),
            Err(UnknownObjectType { index: 1 })
        );
        assert_eq!(
            parse(&encoded(&[], &[obj("bullet", 0.0, 0.0, &[0; 17])])),
            Err(ObjectDataTooLarge {
                index: 0,
                len: 17,
                max: 16
            })
        );
        assert_eq!(
            parse(&encoded(&[], &[obj("bullet", f32::NEG_INFINITY, 0.0, &[])])),
            Err(ObjectNotFinite { index: 0 })
        );
        assert_eq!(
            parse(&encoded(&[], &[obj("bullet", 0.0, 51.0, &[])])),
            Err(ObjectOutOfBounds { index: 0 })
        );
        // A record length that disagrees with its type length.
        let mut b = encoded(&[], &[obj("bullet", 0.0, 0.0, &[])]);
        b[HEADER_LEN + 4] = 200; // type_len
        assert_eq!(
            parse(&b),
            Err(ObjectTypeOverrun {
                index: 0,
                type_len: 200,
                len: 16
            })
        );
        let mut b = encoded(&[], &[obj("bullet", 0.0, 0.0, &[])]);
        b[HEADER_LEN] = 9; // len below the fixed fields
        assert!(matches!(
            parse(&b),
            Err(ObjectTooShort { index: 0, len: 9 })
        ));
        let mut b = encoded(&[], &[obj("bullet", 0.0, 0.0, &[])]);
        b[HEADER_LEN + 3] = 0xff; // len past the end
        assert_eq!(parse(&b), Err(ObjectTruncated { index: 0 }));
        // Huge counts are refused by the limits before any arithmetic on them.
        let mut b = vec![0xff; 8];
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(parse(&b), Err(TooManyPositions { .. })));
        assert!(matches!(
            GameState::parse(&b, &GameStateLimits::permissive()),
            Err(PositionsTruncated { .. })
        ));
    }

    #[test]
    fn type_lookup_never_interns_input() {
        let types = ObjectTypes::new(["a", "b", "a", ""]);
        assert_eq!(types.names().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(!types.contains(b"c"));
        assert!(!types.contains(b"c"));
        assert_eq!(types.names().count(), 2);
        assert!(ObjectTypes::any().contains("anything".as_bytes()));
        assert!(!ObjectTypes::any().contains(&[0xff]));
    }

    fn finite() -> impl Strategy<Value = f32> {
        -1.0e6f32..1.0e6f32
    }

    fn kind() -> impl Strategy<Value = String> {
        "[a-z]{1,12}"
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = GameState::parse(&bytes, &limits());
            if let Ok(state) = GameState::parse(&bytes, &GameStateLimits::permissive()) {
                prop_assert_eq!(state.objects().count(), state.object_count() as usize);
            }
        }

        #[test]
        fn corrupted_valid_messages_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = sample();
            for (i, v) in flips {
                let at = i.index(bytes.len());
                bytes[at] = v;
            }
            let _ = GameState::parse(&bytes, &limits());
        }

        #[test]
        fn encode_then_parse_round_trips(
            positions in proptest::collection::vec((any::<u32>(), finite(), finite()), 0..40),
            objects in proptest::collection::vec(
                (kind(), finite(), finite(), proptest::collection::vec(any::<u8>(), 0..40)), 0..10),
            offset in 0usize..4,
        ) {
            let positions: Vec<Position> =
                positions.iter().map(|&(id, x, y)| Position::new(id, x, y)).collect();
            let records: Vec<ObjectRecord<'_>> = objects
                .iter()
                .map(|(k, x, y, d)| ObjectRecord { kind: k, x: *x, y: *y, data: d })
                .collect();
            let mut buf = vec![0u8; offset];
            encode(&positions, &records, &mut buf).unwrap();
            let msg = &buf[offset..];
            prop_assert_eq!(msg.len(), encoded_len(&positions, &records));
            let state = GameState::parse(msg, &GameStateLimits::permissive()).unwrap();
            prop_assert_eq!(state.positions(), &positions[..]);
            let decoded: Vec<Object<'_>> = state.objects().collect();
            prop_assert_eq!(decoded.len(), records.len());
            for (d, r) in decoded.iter().zip(&records) {
                prop_assert_eq!(d.kind, r.kind);
                prop_assert_eq!(d.x.to_bits(), r.x.to_bits());
                prop_assert_eq!(d.y.to_bits(), r.y.to_bits());
                prop_assert_eq!(d.data, r.data);
            }
        }
    }
}
