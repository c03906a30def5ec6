//! A serde [`Deserializer`] adapter that bounds nesting depth ([`MAX_DECODE_DEPTH`]).
//!
//! Deserializing a recursive type (`enum Tree { Leaf, Node(Box<Tree>) }`,
//! `struct L(Option<Box<L>>)`, …) recurses once per level of the input, so a peer's payload could
//! overflow the stack and abort the process. bincode and postcard have no depth limit. serde_json
//! (128), ciborium (256) and rmp-serde (1024) count only some levels: none of them counts `Some`
//! or newtype structs, which read no input there, so one byte decoded as `L` recurses forever;
//! rmp-serde does not count enums either.
//!
//! [`DepthLimited`] wraps a format's deserializer and every deserializer, visitor, seed and access
//! object serde hands out below it, counts the nested levels being decoded and fails with a custom
//! error once they exceed a maximum. A *level* is one compound value a visitor is given: a
//! sequence (sequence, tuple, tuple struct, and a struct in formats that encode it as a tuple), a
//! map (map, struct), an enum, the value of a `Some`, or the inside of a newtype struct. So
//! `enum Tree { Leaf, Node(Box<Tree>) }` costs one level per node and `struct L(Option<Box<L>>)`
//! two (newtype + `Some`). Counting in the visitor rather than in `deserialize_*` catches a
//! format that answers any request with a compound value.
//!
//! The codecs decode a [`Bounded<T>`], which applies [`DepthLimited`] with [`MAX_DECODE_DEPTH`]
//! from inside the format's own entry point. The counter is a [`Cell`] borrowed by all the
//! wrappers: no allocation, a load, a compare and two stores per level.

use std::cell::Cell;
use std::fmt;

use crate::codec::MAX_DECODE_DEPTH;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// How many more levels may be entered, and the maximum for error messages.
#[derive(Debug)]
pub(crate) struct DepthBudget {
    remaining: Cell<usize>,
    max: usize,
}

impl DepthBudget {
    /// A budget of `max` levels.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            remaining: Cell::new(max),
            max,
        }
    }

    /// Runs `f` one level deeper, or fails if that would exceed the maximum.
    #[inline]
    fn nest<T, E: de::Error>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let remaining = self.remaining.get();
        let Some(less) = remaining.checked_sub(1) else {
            return Err(self.too_deep());
        };
        self.remaining.set(less);
        let result = f();
        self.remaining.set(remaining);
        result
    }

    #[cold]
    fn too_deep<E: de::Error>(&self) -> E {
        E::custom(format_args!("nesting deeper than {} levels", self.max))
    }
}

/// A `T` decoded with its nesting bounded by [`MAX_DECODE_DEPTH`].
///
/// Decode a `Bounded<T>` with any serde format's own entry point (`decode_from_slice`,
/// `from_slice`, `from_reader`, …) to get a depth-limited `T`: the format keeps doing its own
/// bookkeeping (bytes consumed, trailing data), and this works even where the format's
/// `Deserializer` type is private (ciborium).
pub(crate) struct Bounded<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Bounded<T> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let budget = DepthBudget::new(MAX_DECODE_DEPTH);
        T::deserialize(DepthLimited::new(de, &budget)).map(Bounded)
    }
}

/// A [`Deserializer`] whose nesting depth is bounded by a shared [`DepthBudget`].
pub(crate) struct DepthLimited<'b, D> {
    inner: D,
    budget: &'b DepthBudget,
}

impl<'b, D> DepthLimited<'b, D> {
    /// Wraps `inner`, charging every nested level to `budget`.
    pub(crate) fn new(inner: D, budget: &'b DepthBudget) -> Self {
        Self { inner, budget }
    }
}

/// Forwards `deserialize_*` methods taking only a visitor.
macro_rules! forward_deserialize {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method(Guard::new(visitor, self.budget))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for DepthLimited<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .deserialize_unit_struct(name, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .deserialize_newtype_struct(name, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .deserialize_tuple(len, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .deserialize_tuple_struct(name, len, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .deserialize_struct(name, fields, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .deserialize_enum(name, variants, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A [`Visitor`] that charges compound values to the budget and wraps what it hands on.
struct Guard<'b, V> {
    inner: V,
    budget: &'b DepthBudget,
}

impl<'b, V> Guard<'b, V> {
    #[inline]
    fn new(inner: V, budget: &'b DepthBudget) -> Self {
        Self { inner, budget }
    }
}

/// Forwards `visit_*` methods of scalars.
macro_rules! forward_visit {
    ($($method:ident: $ty:ty)*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Guard<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool: bool
        visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64 visit_i128: i128
        visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64 visit_u128: u128
        visit_f32: f32 visit_f64: f64 visit_char: char
        visit_str: &str visit_borrowed_str: &'de str visit_string: String
        visit_bytes: &[u8] visit_borrowed_bytes: &'de [u8] visit_byte_buf: Vec<u8>
    }

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_some(DepthLimited::new(de, budget)))
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let budget = self.budget;
        budget.nest(|| {
            self.inner
                .visit_newtype_struct(DepthLimited::new(de, budget))
        })
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_seq(Access::new(seq, budget)))
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_map(Access::new(map, budget)))
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget;
        budget.nest(|| self.inner.visit_enum(Access::new(data, budget)))
    }
}

/// A [`DeserializeSeed`] that hands its seed a [`DepthLimited`] deserializer.
struct Seed<'b, S> {
    inner: S,
    budget: &'b DepthBudget,
}

impl<'b, S> Seed<'b, S> {
    #[inline]
    fn new(inner: S, budget: &'b DepthBudget) -> Self {
        Self { inner, budget }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(DepthLimited::new(de, self.budget))
    }
}

/// The `SeqAccess`, `MapAccess`, `EnumAccess` and `VariantAccess` wrapper: every seed and visitor
/// passed through it is wrapped.
struct Access<'b, A> {
    inner: A,
    budget: &'b DepthBudget,
}

impl<'b, A> Access<'b, A> {
    #[inline]
    fn new(inner: A, budget: &'b DepthBudget) -> Self {
        Self { inner, budget }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.inner.next_element_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.inner.next_key_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.next_value_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn next_entry_seed<K: DeserializeSeed<'de>, V: DeserializeSeed<'de>>(
        &mut self,
        kseed: K,
        vseed: V,
    ) -> Result<Option<(K::Value, V::Value)>, Self::Error> {
        self.inner
            .next_entry_seed(Seed::new(kseed, self.budget), Seed::new(vseed, self.budget))
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'b, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<'b, A> {
    type Error = A::Error;
    type Variant = Access<'b, A::Variant>;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let budget = self.budget;
        let (value, variant) = self.inner.variant_seed(Seed::new(seed, budget))?;
        Ok((value, Access::new(variant, budget)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), Self::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.inner
            .newtype_variant_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .tuple_variant(len, Guard::new(visitor, self.budget))
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner
            .struct_variant(fields, Guard::new(visitor, self.budget))
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use crate::codec::{BincodeCodec, Codec};

    /// Decodes `bytes` as a `T` with a budget of `max` levels through bincode.
    fn bincode_with_max<T: serde::de::DeserializeOwned>(bytes: &[u8], max: usize) -> Option<T> {
        let budget = super::DepthBudget::new(max);
        let config = bincode::config::standard();
        let mut de = bincode::serde::OwnedSerdeDecoder::from_reader(
            bincode::de::read::SliceReader::new(bytes),
            config,
        );
        T::deserialize(super::DepthLimited::new(de.as_deserializer(), &budget)).ok()
    }

    fn enc<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    #[test]
    fn levels_are_counted_as_documented() {
        // Scalars cost nothing; each compound value costs one level.
        assert_eq!(bincode_with_max::<u32>(&enc(&7u32), 0), Some(7));
        assert_eq!(bincode_with_max::<Option<u8>>(&enc(&Some(1u8)), 0), None);
        assert_eq!(
            bincode_with_max::<Option<u8>>(&enc(&Some(1u8)), 1),
            Some(Some(1))
        );
        assert_eq!(
            bincode_with_max::<Option<u8>>(&enc(&None::<u8>), 0),
            Some(None)
        );
        let nested = vec![vec![(1u8, 2u8)]];
        assert_eq!(
            bincode_with_max::<Vec<Vec<(u8, u8)>>>(&enc(&nested), 2),
            None
        );
        assert_eq!(
            bincode_with_max::<Vec<Vec<(u8, u8)>>>(&enc(&nested), 3),
            Some(nested)
        );
        // Siblings do not add up: the budget is given back on the way out.
        let wide: Vec<Vec<u8>> = vec![vec![1]; 1000];
        assert_eq!(bincode_with_max::<Vec<Vec<u8>>>(&enc(&wide), 2), Some(wide));
    }

    /// A value that, like an IP address type, encodes as text for human-readable formats and as
    /// a number otherwise.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Port(u16);

    impl Serialize for Port {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.serialize_str(&format!("port {}", self.0))
            } else {
                s.serialize_u16(self.0)
            }
        }
    }

    impl<'de> serde::Deserialize<'de> for Port {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            use serde::de::Error;
            if d.is_human_readable() {
                let s = String::deserialize(d)?;
                s.strip_prefix("port ")
                    .and_then(|n| n.parse().ok())
                    .map(Port)
                    .ok_or_else(|| D::Error::custom("not a port"))
            } else {
                u16::deserialize(d).map(Port)
            }
        }
    }

    /// `is_human_readable` reaches the format through the depth limiter: a value encodes as a
    /// number in bincode and as a string in JSON, and must decode the same way.
    #[test]
    fn human_readability_is_forwarded() {
        let ports = vec![Port(80), Port(8080)];
        let one = Port(443);
        let bytes = BincodeCodec.encode(&(&ports, one)).unwrap();
        assert_eq!(
            BincodeCodec.decode::<(Vec<Port>, Port)>(&bytes).unwrap(),
            (ports.clone(), one)
        );
        #[cfg(feature = "codec-json")]
        {
            let json = crate::codec::JsonCodec;
            let bytes = json.encode(&(&ports, one)).unwrap();
            assert!(bytes.starts_with(b"[[\"port 80\""));
            assert_eq!(
                json.decode::<(Vec<Port>, Port)>(&bytes).unwrap(),
                (ports, one)
            );
        }
    }

    /// serde's buffered paths (internally tagged and untagged enums, flattened fields) work
    /// through the wrapper, and what they buffer is depth-limited too.
    #[cfg(feature = "codec-json")]
    #[test]
    fn buffered_serde_attributes_work() {
        use std::collections::BTreeMap;

        use serde::Deserialize;

        use crate::codec::MAX_DECODE_DEPTH;

        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        #[serde(tag = "type")]
        enum Tagged {
            A { x: u32 },
            B { inner: Box<Option<Tagged>> },
        }

        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Untagged {
            Num(u64),
            Text(String),
            List(Vec<Untagged>),
        }

        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Flat {
            id: u32,
            #[serde(flatten)]
            rest: BTreeMap<String, Untagged>,
            #[serde(flatten)]
            extra: Option<Extra>,
        }

        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Extra {
            note: String,
        }

        let json = crate::codec::JsonCodec;
        let tagged = Tagged::B {
            inner: Box::new(Some(Tagged::A { x: 3 })),
        };
        let bytes = json.encode(&tagged).unwrap();
        assert_eq!(json.decode::<Tagged>(&bytes).unwrap(), tagged);

        let untagged = Untagged::List(vec![Untagged::Num(1), Untagged::Text("t".into())]);
        let bytes = json.encode(&untagged).unwrap();
        assert_eq!(json.decode::<Untagged>(&bytes).unwrap(), untagged);

        let flat = Flat {
            id: 1,
            rest: [("k".to_string(), Untagged::Num(2))].into(),
            extra: Some(Extra { note: "n".into() }),
        };
        let bytes = json.encode(&flat).unwrap();
        let back = json.decode::<Flat>(&bytes).unwrap();
        assert_eq!(back.id, 1);
        assert_eq!(back.extra, flat.extra);

        // serde buffers untagged input through the wrapper, so the limit applies while buffering.
        let mut deep = "[".repeat(100);
        deep.push('1');
        deep.push_str(&"]".repeat(100));
        assert!(json.decode::<Untagged>(deep.as_bytes()).is_ok());
        let mut too_deep = "[".repeat(MAX_DECODE_DEPTH + 1);
        too_deep.push('1');
        too_deep.push_str(&"]".repeat(MAX_DECODE_DEPTH + 1));
        assert!(json.decode::<Untagged>(too_deep.as_bytes()).is_err());
    }
}
