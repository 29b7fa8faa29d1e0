//! The little-endian value format against basic-socket-rpc 0.6.1: the captured greet session
//! (`/work/shared/reference/wire-formats.md` §2), the Python serializers' bytes written out by hand
//! from `rpc_serialization_functions.py`, round trips, every decoding error, the path through
//! rpc-core's `Payload` and `FromArgs`, and randomized input that must never panic.
#![cfg(feature = "raw")]

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use rpc_codecs::raw::{from_bytes, to_bytes, Deserializer, Le, LeError, LE, MAX_DEPTH};
use rpc_core::format::{AsSeq, FromArgs};
use rpc_core::{ErrorCode, Format, Payload};
use serde::de::{DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Hex with spaces for readability, as the captures are written.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex {s:?}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// `value` encodes to `expected` and decodes back from it.
#[track_caller]
fn vector<T>(value: T, expected: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let expected = hex(expected);
    assert_eq!(to_bytes(&value).unwrap(), expected, "encoding {value:?}");
    assert_eq!(
        from_bytes::<T>(&expected).unwrap(),
        value,
        "decoding {value:?}"
    );
}

fn payload(bytes: &[u8]) -> Payload {
    Payload::new(Bytes::copy_from_slice(bytes), &LE)
}

fn args<T: FromArgs>(bytes: &[u8]) -> Result<T, rpc_core::ServerError> {
    T::from_args(&payload(bytes), None)
}

// ---- the captured greet session -------------------------------------------------------------

#[test]
fn greet_hello_and_goodbye() {
    let sent = Payload::encode(&LE, &AsSeq(&("Robert",))).unwrap();
    assert_eq!(sent.bytes().as_ref(), hex("06000000 526f62657274"));
    let (name,) = <(String,)>::from_args(&sent, None).unwrap();
    assert_eq!(name, "Robert");

    let result = Payload::encode(&LE, "hello Robert").unwrap();
    assert_eq!(
        result.bytes().as_ref(),
        hex("0c000000 68656c6c6f20526f62657274")
    );
    assert_eq!(result.decode::<String>().unwrap(), "hello Robert");

    vector(
        "goodbye Robert".to_string(),
        "0e000000 676f6f6462796520526f62657274",
    );
}

#[test]
fn greet_add_2_words() {
    let sent = Payload::encode(&LE, &AsSeq(&(1000u32, 2050u32))).unwrap();
    assert_eq!(sent.bytes().as_ref(), hex("e8030000 02080000"));
    assert_eq!(<(u32, u32)>::from_args(&sent, None).unwrap(), (1000, 2050));

    let result = Payload::encode(&LE, &3050u32).unwrap();
    assert_eq!(result.bytes().as_ref(), hex("ea0b0000"));
    assert_eq!(result.decode::<u32>().unwrap(), 3050);
}

#[test]
fn greet_func_no_args() {
    let sent = Payload::encode(&LE, &AsSeq(&())).unwrap();
    assert!(sent.bytes().is_empty());
    <()>::from_args(&sent, None).unwrap();
    // The empty result.
    assert!(Payload::encode(&LE, &()).unwrap().bytes().is_empty());
    Payload::empty(&LE).decode::<()>().unwrap();
    // Python's call_no_args refuses any argument bytes; so do we.
    let e = args::<()>(b"\x00").unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PARAMS);
    assert!(
        e.message().contains("1 trailing byte(s)"),
        "{}",
        e.message()
    );
}

// ---- rpc-core's argument lists ----------------------------------------------------------------

#[test]
fn wrong_arity_is_invalid_params() {
    let two = to_bytes(&("Robert", "x")).unwrap();
    // More arguments than the handler takes: the tuple stops, the rest are trailing bytes.
    let e = args::<(String,)>(&two).unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PARAMS);
    assert!(
        e.message().contains("5 trailing byte(s)"),
        "{}",
        e.message()
    );
    // Fewer: the input ends.
    let e = args::<(String, String, String)>(&two).unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PARAMS);
    assert!(
        e.message().contains("unexpected end of input"),
        "{}",
        e.message()
    );
    let e = args::<(u32, u32)>(&hex("e8030000")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PARAMS);
    // A bad value is invalid params too.
    let e = args::<(bool,)>(b"\x02").unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PARAMS);
    assert!(
        e.message().contains("invalid bool byte 0x02"),
        "{}",
        e.message()
    );
    // And the right arity of course works, with every kind of argument.
    assert_eq!(
        args::<(String, u32, Vec<u16>, Option<bool>)>(
            &to_bytes(&("a", 7u32, vec![1u16], Some(true))).unwrap()
        )
        .unwrap(),
        ("a".into(), 7, vec![1], Some(true))
    );
}

#[test]
fn a_vec_as_arguments_is_one_python_array() {
    // rpc-core encodes a `Vec` argument list as a sequence: in this format that is Python's
    // make_serialize_array, with its header, not the bare concatenation of a tuple.
    let sent = Payload::encode(&LE, &AsSeq(&vec![1u8, 2])).unwrap();
    assert_eq!(sent.bytes().as_ref(), hex("06000000 02000000 0102"));
    let sent = Payload::encode(&LE, &AsSeq(&[1u8, 2][..])).unwrap();
    assert_eq!(sent.bytes().as_ref(), hex("06000000 02000000 0102"));
}

#[test]
fn the_format_object() {
    let f: &'static dyn Format = &LE;
    assert_eq!(f.name(), "le");
    let f: &dyn Format = &Le;
    assert_eq!(f.name(), "le");
    assert_eq!(format!("{:?}", Le), "Le");
    fn traits<T: Default + Clone + Copy + fmt::Debug + Send + Sync + 'static>() {}
    traits::<Le>();

    // encode appends to what the buffer holds.
    let mut dst = BytesMut::from(&b"head"[..]);
    f.encode(&("Robert",), &mut dst).unwrap();
    assert_eq!(
        &dst[..],
        [&b"head"[..], &hex("06000000 526f62657274")].concat()
    );

    // decode ignores parameter names and refuses trailing bytes.
    let names: &[&'static str] = &["name"];
    let (name,): (String,) =
        rpc_core::format::decode(f, &hex("06000000 526f62657274"), Some(names)).unwrap();
    assert_eq!(name, "Robert");
    let e = rpc_core::format::decode::<u16>(f, b"\x01\x00\x00", None).unwrap_err();
    assert_eq!(e.to_string(), "1 trailing byte(s) after the value");
    let e = payload(b"\x01\x00\x00").decode::<u16>().unwrap_err();
    assert!(e.to_string().contains("1 trailing byte(s)"), "{e}");
}

#[test]
fn a_failed_encode_leaves_the_buffer_as_it_was() {
    #[derive(Serialize)]
    struct Skips {
        a: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<u8>,
    }
    let mut dst = BytesMut::from(&b"head"[..]);
    let e = LE
        .encode(
            &vec![Skips { a: 1, b: Some(2) }, Skips { a: 3, b: None }],
            &mut dst,
        )
        .unwrap_err();
    assert!(e.to_string().contains("cannot skip field `b`"), "{e}");
    assert_eq!(&dst[..], b"head");
    // Without the skip, the field is there.
    assert_eq!(
        to_bytes(&Skips { a: 1, b: Some(2) }).unwrap(),
        hex("01 0102")
    );
}

// ---- Python's serializers, byte for byte ------------------------------------------------------

#[test]
fn scalars_match_the_int_to_le_bytes_helpers() {
    vector(true, "01"); // serialize_bool
    vector(false, "00");
    vector(0xabu8, "ab"); // int_to_le_bytes_1
    vector(-1i8, "ff");
    vector(0x0102u16, "0201"); // int_to_le_bytes_2
    vector(-2i16, "feff");
    vector(0x01020304u32, "04030201"); // int_to_le_bytes_4
    vector(-3i32, "fdffffff");
    vector(0x0102030405060708u64, "0807060504030201"); // int_to_le_bytes_8
    vector(i64::MIN, "0000000000000080");
    vector(u128::MAX - 1, "feffffffffffffffffffffffffffffff");
    vector(-1i128, "ffffffffffffffffffffffffffffffff");
    vector(1.5f32, "0000c03f");
    vector(-2.0f64, "00000000000000c0");
    vector('A', "41000000");
    vector('é', "e9000000");
    vector('😀', "00f60100");
    let nan = from_bytes::<f64>(&hex("010000000000f87f")).unwrap();
    assert!(nan.is_nan());
    assert_eq!(
        to_bytes(&nan).unwrap(),
        hex("010000000000f87f"),
        "NaN bits kept"
    );
}

#[test]
fn strings_and_bytes_match_serialize_str_and_serialize_bytes() {
    vector(String::new(), "00000000");
    vector("Robert".to_string(), "06000000 526f62657274");
    vector("é".to_string(), "02000000 c3a9");
    assert_eq!(from_bytes::<&str>(&hex("02000000 6869")).unwrap(), "hi");

    vector(ByteBuf::from(vec![0, 0xff]), "02000000 00ff");
    vector(Bytes::from_static(b"\x00\xff"), "02000000 00ff");
    vector(ByteBuf::new(), "00000000");
    assert_eq!(
        to_bytes(serde_bytes::Bytes::new(b"ab")).unwrap(),
        hex("02000000 6162")
    );
    let input = hex("02000000 6162");
    let borrowed: &[u8] = from_bytes(&input).unwrap();
    assert_eq!(borrowed, b"ab");
    // A Vec<u8> is a sequence of u8, not a byte string.
    vector(vec![0u8, 0xff], "06000000 02000000 00ff");
}

#[test]
fn sequences_match_make_serialize_array() {
    // make_serialize_array(int_to_le_bytes_4)([1, 2, 3])
    //   = serialize_bytes(int_to_le_bytes_4(3) + 01000000 02000000 03000000)
    vector(
        vec![1u32, 2, 3],
        "10000000 03000000 01000000 02000000 03000000",
    );
    // make_serialize_array(serialize_str)(["a", "bc"])
    vector(
        vec!["a".to_string(), "bc".to_string()],
        "0f000000 02000000 01000000 61 02000000 6263",
    );
    // make_serialize_array(int_to_le_bytes_2)([])
    vector(Vec::<u16>::new(), "04000000 00000000");
    // make_serialize_array(serialize_bool)([True, False, True])
    vector(vec![true, false, true], "07000000 03000000 010001");
    // make_serialize_array(make_serialize_array(int_to_le_bytes_1))([[1], []])
    vector(
        vec![vec![1u8], vec![]],
        "15000000 02000000 05000000 01000000 01 04000000 00000000",
    );
    // A slice encodes as its Vec.
    assert_eq!(
        to_bytes(&[0x0102u16][..]).unwrap(),
        hex("06000000 01000000 0201")
    );
    // make_serialize_array(make_serializer(serialize_str, int_to_le_bytes_2, _splat_args=False))
    //   ([("a", 1)]): elements are tuples, concatenated.
    vector(
        vec![("a".to_string(), 1u16)],
        "0b000000 01000000 01000000 61 0100",
    );
}

#[test]
fn fixed_size_arrays_and_tuples_match_make_serializer() {
    // make_serialize_array_fixed_size(3, int_to_le_bytes_2)([1, 2, 3])
    vector([1u16, 2, 3], "0100 0200 0300");
    vector([[1u8, 2], [3, 4]], "01020304");
    vector([0u32; 0], "");
    // make_serializer(serialize_str, int_to_le_bytes_4)("a", 5)
    vector(("a".to_string(), 5u32), "01000000 61 05000000");
    // Nested tuples flatten into one run of bytes.
    vector(
        ((1u8, (2u16, "x".to_string())), true),
        "01 0200 01000000 78 01",
    );
    vector((), "");
    vector(((), ((),)), "");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Person {
    name: String,
    age: u8,
    nick: Option<String>,
    tags: Vec<String>,
    home: Point,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Meters(f32);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Pair(u8, u16);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Nothing;

#[test]
fn structs_are_their_fields_in_order() {
    vector(Point { x: 1, y: -1 }, "01000000 ffffffff");
    vector(
        Person {
            name: "Al".into(),
            age: 30,
            nick: None,
            tags: vec!["x".into()],
            home: Point { x: 2, y: 3 },
        },
        "02000000 416c 1e 00 09000000 01000000 01000000 78 02000000 03000000",
    );
    vector(Meters(1.5), "0000c03f");
    vector(Pair(1, 2), "01 0200");
    vector(Nothing, "");
}

#[test]
fn options_are_a_tag_byte() {
    vector(None::<u16>, "00");
    vector(Some(5u16), "01 0500");
    vector(Some(None::<u8>), "01 00");
    vector(Some(Some(0u8)), "01 01 00");
    vector(Some("a".to_string()), "01 01000000 61");
    vector(vec![None, Some(1u8)], "07000000 02000000 00 0101");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Shape {
    Empty,
    Circle(u16),
    Line(u8, u8),
    Named { name: String },
}

#[test]
fn enums_are_a_variant_index_then_the_content() {
    vector(Shape::Empty, "00000000");
    vector(Shape::Circle(5), "01000000 0500");
    vector(Shape::Line(1, 2), "02000000 0102");
    vector(Shape::Named { name: "z".into() }, "03000000 01000000 7a");
    vector(
        vec![Shape::Empty, Shape::Circle(1)],
        "0e000000 02000000 00000000 01000000 0100",
    );
    let e = from_bytes::<Shape>(&hex("04000000")).unwrap_err();
    assert!(matches!(e, LeError::Custom(_)), "{e:?}");
    assert!(e.to_string().contains("variant index"), "{e}");
    vector(Ok::<u8, String>(7), "00000000 07");
    vector(Err::<u8, String>("no".into()), "01000000 02000000 6e6f");
}

#[test]
fn maps_are_counted_key_value_pairs() {
    let map: BTreeMap<String, u8> = [("a".into(), 1), ("b".into(), 2)].into();
    vector(map, "10000000 02000000 01000000 61 01 01000000 62 02");
    vector(BTreeMap::<u8, u8>::new(), "04000000 00000000");
    let nested: BTreeMap<u8, Vec<u8>> = [(1, vec![2])].into();
    vector(nested, "0e000000 01000000 01 05000000 01000000 02");
}

// ---- round trips --------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Everything {
    b: bool,
    ints: (i8, u8, i16, u16, i32, u32, i64, u64, i128, u128),
    floats: (f32, f64),
    c: char,
    s: String,
    bytes: ByteBuf,
    opt: Option<Box<Everything>>,
    list: Vec<(String, Option<u32>)>,
    map: BTreeMap<String, Vec<i16>>,
    arr: [u8; 3],
    unit: (),
    shapes: Vec<Shape2>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape2 {
    Empty,
    Circle(u16),
    Line(u8, u8),
    Named { name: String },
}

fn everything() -> Everything {
    let leaf = Everything {
        b: false,
        ints: (-1, 2, -3, 4, -5, 6, -7, 8, -9, 10),
        floats: (0.5, -1e300),
        c: '\u{10ffff}',
        s: String::new(),
        bytes: ByteBuf::new(),
        opt: None,
        list: vec![],
        map: BTreeMap::new(),
        arr: [0; 3],
        unit: (),
        shapes: vec![],
    };
    Everything {
        b: true,
        ints: (
            i8::MIN,
            u8::MAX,
            i16::MIN,
            u16::MAX,
            i32::MIN,
            u32::MAX,
            i64::MIN,
            u64::MAX,
            i128::MIN,
            u128::MAX,
        ),
        floats: (f32::INFINITY, f64::MIN_POSITIVE),
        c: 'ß',
        s: "héllo wörld".into(),
        bytes: ByteBuf::from(vec![0, 1, 2, 255]),
        opt: Some(Box::new(leaf)),
        list: vec![("a".into(), Some(1)), ("".into(), None)],
        map: [("k".into(), vec![-1, 1]), ("".into(), vec![])].into(),
        arr: [7, 8, 9],
        unit: (),
        shapes: vec![
            Shape2::Empty,
            Shape2::Circle(3),
            Shape2::Line(4, 5),
            Shape2::Named { name: "n".into() },
        ],
    }
}

#[test]
fn round_trips() {
    let value = everything();
    let bytes = to_bytes(&value).unwrap();
    assert_eq!(from_bytes::<Everything>(&bytes).unwrap(), value);

    // Through the Format, as rpc-core drives it.
    let p = Payload::encode(&LE, &value).unwrap();
    assert_eq!(p.bytes().as_ref(), bytes);
    assert_eq!(p.decode::<Everything>().unwrap(), value);
    let (a, b) = args::<(Everything, u8)>(&to_bytes(&(value.clone(), 9u8)).unwrap()).unwrap();
    assert_eq!((a, b), (value, 9));

    for s in ["", "a", "Robert", "日本語", "\0\u{7f}"] {
        assert_eq!(from_bytes::<String>(&to_bytes(s).unwrap()).unwrap(), s);
    }
    for n in [0i64, 1, -1, i64::MAX, i64::MIN] {
        assert_eq!(from_bytes::<i64>(&to_bytes(&n).unwrap()).unwrap(), n);
    }
}

// ---- decoding errors ----------------------------------------------------------------------------

/// Decodes as `T`, keeping only the error.
fn check<T: DeserializeOwned>(input: &[u8]) -> Result<(), LeError> {
    from_bytes::<T>(input).map(drop)
}

#[test]
fn every_truncation_is_an_error() {
    let cases: [(Vec<u8>, fn(&[u8]) -> Result<(), LeError>); 6] = [
        (to_bytes(&everything()).unwrap(), check::<Everything>),
        (hex("06000000 526f62657274"), check::<String>),
        (hex("e8030000 02080000"), check::<(u32, u32)>),
        (
            to_bytes(&vec!["a".to_string(), "bc".to_string()]).unwrap(),
            check::<Vec<String>>,
        ),
        (
            to_bytes(&(Some(1u8), Shape::Named { name: "x".into() })).unwrap(),
            check::<(Option<u8>, Shape)>,
        ),
        (
            to_bytes(&BTreeMap::from([(1u8, "a".to_string())])).unwrap(),
            check::<BTreeMap<u8, String>>,
        ),
    ];
    for (full, decode) in &cases {
        decode(full).unwrap();
        for cut in 0..full.len() {
            assert_eq!(
                decode(&full[..cut]),
                Err(LeError::Eof),
                "cut at {cut} of {full:02x?}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    assert_eq!(
        from_bytes::<u32>(&hex("ea0b0000 00")),
        Err(LeError::TrailingBytes(1))
    );
    assert_eq!(
        from_bytes::<String>(&hex("06000000 526f62657274 0000")),
        Err(LeError::TrailingBytes(2))
    );
    assert_eq!(from_bytes::<()>(b"x"), Err(LeError::TrailingBytes(1)));
    let mut de = Deserializer::new(b"\x01\x02");
    assert_eq!(u8::deserialize(&mut de).unwrap(), 1);
    assert_eq!(de.remaining(), b"\x02");
    assert_eq!(de.end(), Err(LeError::TrailingBytes(1)));
}

#[test]
fn only_0_and_1_are_bools_and_option_tags() {
    for b in [2u8, 0x10, 0xff] {
        assert_eq!(from_bytes::<bool>(&[b]), Err(LeError::InvalidBool(b)));
        assert_eq!(
            from_bytes::<Option<u8>>(&[b, 0]),
            Err(LeError::InvalidOption(b))
        );
    }
    assert_eq!(
        from_bytes::<Vec<bool>>(&hex("06000000 02000000 0102")),
        Err(LeError::InvalidBool(2))
    );
}

#[test]
fn invalid_utf8_and_chars_are_errors() {
    for bad in [
        "02000000 c328",
        "01000000 ff",
        "03000000 eda080", /* a surrogate */
    ] {
        assert_eq!(
            from_bytes::<String>(&hex(bad)),
            Err(LeError::InvalidUtf8),
            "{bad}"
        );
        assert_eq!(
            from_bytes::<&str>(&hex(bad)),
            Err(LeError::InvalidUtf8),
            "{bad}"
        );
    }
    // Bytes are not checked.
    assert_eq!(
        from_bytes::<ByteBuf>(&hex("02000000 c328")).unwrap(),
        ByteBuf::from(vec![0xc3, 0x28])
    );
    assert_eq!(
        from_bytes::<char>(&hex("00d80000")),
        Err(LeError::InvalidChar(0xd800))
    );
    assert_eq!(
        from_bytes::<char>(&hex("00001100")),
        Err(LeError::InvalidChar(0x110000))
    );
}

#[test]
fn a_huge_length_prefix_fails_before_allocating() {
    let huge = hex("ffffffff 61");
    assert_eq!(from_bytes::<String>(&huge), Err(LeError::Eof));
    assert_eq!(from_bytes::<ByteBuf>(&huge), Err(LeError::Eof));
    assert_eq!(from_bytes::<Vec<u64>>(&huge), Err(LeError::Eof));
    assert_eq!(from_bytes::<BTreeMap<u8, u8>>(&huge), Err(LeError::Eof));
    assert_eq!(
        from_bytes::<(u8, String)>(&hex("00 ffffffff")),
        Err(LeError::Eof)
    );
    // A huge element count inside an honest byte length: the elements run out.
    assert_eq!(
        from_bytes::<Vec<u64>>(&hex("0c000000 ffffffff 0100000000000000")),
        Err(LeError::LengthMismatch)
    );
    assert_eq!(
        from_bytes::<Vec<String>>(&hex("04000000 ffffffff")),
        Err(LeError::LengthMismatch)
    );
}

#[test]
fn size_hints_never_exceed_the_input() {
    /// Records the first size hint and reads nothing.
    struct Hint;
    impl<'de> Visitor<'de> for Hint {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a seq")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(format_args!(
                "hint {:?}",
                seq.size_hint()
            )))
        }
    }
    // A count of 4096 with 8 bytes of elements (a count past what zero-sized elements may
    // claim is refused before any hint).
    let input = hex("0c000000 00100000 0100000000000000");
    let e = serde::Deserializer::deserialize_seq(&mut Deserializer::new(&input), Hint).unwrap_err();
    assert_eq!(e, LeError::Custom("hint Some(8)".into()));
    let e =
        serde::Deserializer::deserialize_map(&mut Deserializer::new(&input), HintMap).unwrap_err();
    assert_eq!(e, LeError::Custom("hint Some(8)".into()));

    struct HintMap;
    impl<'de> Visitor<'de> for HintMap {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(format_args!(
                "hint {:?}",
                map.size_hint()
            )))
        }
    }
}

#[test]
fn a_byte_length_that_disagrees_with_the_elements_is_an_error() {
    // Correct: 06000000 02000000 0102.
    assert_eq!(
        from_bytes::<Vec<u8>>(&hex("06000000 02000000 0102")).unwrap(),
        [1, 2]
    );
    let bad = [
        "07000000 02000000 010203", // a stray byte inside the byte length
        "05000000 02000000 0102",   // byte length too short for the elements
        "04000000 02000000 0102",   // byte length covers the count only
        "03000000 020000",          // byte length cannot even hold the count
        "00000000",                 // nor this
        "06000000 03000000 0102",   // count too large for the bytes
        "06000000 01000000 0102",   // count too small for the bytes
    ];
    for b in bad {
        assert_eq!(
            from_bytes::<Vec<u8>>(&hex(b)),
            Err(LeError::LengthMismatch),
            "{b}"
        );
    }
    // The same for a nested sequence: the inner one claims more than the outer one holds.
    assert_eq!(
        from_bytes::<Vec<Vec<u8>>>(&hex("0a000000 01000000 06000000 01000000 01")),
        Err(LeError::LengthMismatch)
    );
    // And for maps.
    assert_eq!(
        from_bytes::<BTreeMap<u8, u8>>(&hex("07000000 01000000 010203")),
        Err(LeError::LengthMismatch)
    );
    assert_eq!(
        from_bytes::<BTreeMap<u8, u8>>(&hex("05000000 01000000 01")),
        Err(LeError::LengthMismatch)
    );
}

#[test]
fn the_format_is_not_self_describing() {
    assert_eq!(
        from_bytes::<IgnoredAny>(b""),
        Err(LeError::NotSelfDescribing)
    );
    assert_eq!(
        from_bytes::<serde_json::Value>(b"\x01"),
        Err(LeError::NotSelfDescribing)
    );
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Untagged {
        A(()),
    }
    assert_eq!(from_bytes::<Untagged>(b""), Err(LeError::NotSelfDescribing));
    let e = payload(b"\x01").decode::<serde_json::Value>().unwrap_err();
    assert!(e.to_string().contains("not self-describing"), "{e}");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct List(Option<Box<List>>);

fn list_input(depth: usize) -> Vec<u8> {
    let mut v = vec![1u8; depth];
    v.push(0);
    v
}

#[test]
fn deep_input_is_refused_not_recursed_into() {
    let ok = from_bytes::<List>(&list_input(MAX_DEPTH)).unwrap();
    assert_eq!(to_bytes(&ok).unwrap(), list_input(MAX_DEPTH));
    assert_eq!(
        from_bytes::<List>(&list_input(MAX_DEPTH + 1)),
        Err(LeError::TooDeep)
    );
    // Far deeper than any stack would take.
    assert_eq!(
        from_bytes::<List>(&list_input(1_000_000)),
        Err(LeError::TooDeep)
    );
}

#[test]
fn error_messages_are_lowercase_std_errors() {
    let errors = [
        LeError::Eof,
        LeError::TrailingBytes(3),
        LeError::InvalidBool(2),
        LeError::InvalidOption(2),
        LeError::InvalidChar(0xd800),
        LeError::InvalidUtf8,
        LeError::LengthMismatch,
        LeError::NotSelfDescribing,
        LeError::TooLong,
        LeError::TooDeep,
    ];
    for e in errors {
        let msg = e.to_string();
        let first = msg.chars().next().unwrap();
        assert!(first.is_lowercase() || first.is_ascii_digit(), "{msg}");
        let _: &dyn std::error::Error = &e;
    }
    assert_eq!(
        LeError::TrailingBytes(3).to_string(),
        "3 trailing byte(s) after the value"
    );
    assert_eq!(
        <LeError as serde::de::Error>::custom("boom"),
        LeError::Custom("boom".into())
    );
    assert_eq!(
        <LeError as serde::ser::Error>::custom("boom").to_string(),
        "boom"
    );
}

// ---- randomized input ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes `input` as `T`; when that succeeds the encoding is canonical, so it re-encodes to the
/// same bytes.
fn canonical<T: Serialize + DeserializeOwned + fmt::Debug>(input: &[u8]) -> bool {
    match from_bytes::<T>(input) {
        Ok(v) => {
            assert_eq!(to_bytes(&v).unwrap(), input, "{v:?} from {input:02x?}");
            true
        }
        Err(_) => false,
    }
}

/// Maps are not canonical (duplicate keys collapse), but what they decode to is: its encoding
/// decodes and re-encodes to itself.
fn stable<T: Serialize + DeserializeOwned>(input: &[u8]) -> bool {
    match from_bytes::<T>(input) {
        Ok(v) => {
            let once = to_bytes(&v).unwrap();
            let twice = to_bytes(&from_bytes::<T>(&once).unwrap()).unwrap();
            assert_eq!(once, twice);
            true
        }
        Err(_) => false,
    }
}

fn decode_all(input: &[u8]) -> usize {
    let results = [
        canonical::<(String, u32)>(input),
        canonical::<Vec<String>>(input),
        canonical::<Option<Vec<(u8, bool)>>>(input),
        canonical::<Shape>(input),
        canonical::<Vec<Shape2>>(input),
        canonical::<(ByteBuf, char, f64, i128)>(input),
        canonical::<List>(input),
        canonical::<Person>(input),
        stable::<BTreeMap<String, Vec<u16>>>(input),
        stable::<Everything>(input),
        args::<(String,)>(input).is_ok(),
        args::<(u32, u32)>(input).is_ok(),
        args::<()>(input).is_ok(),
        payload(input).decode::<Vec<Option<String>>>().is_ok(),
    ];
    results.iter().filter(|ok| **ok).count()
}

#[test]
fn random_input_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        to_bytes(&everything()).unwrap(),
        hex("06000000 526f62657274"),
        hex("e8030000 02080000"),
        to_bytes(&vec!["a".to_string(), "bc".to_string()]).unwrap(),
        to_bytes(&Some(vec![(1u8, true), (2, false)])).unwrap(),
        to_bytes(&vec![
            Shape2::Named { name: "q".into() },
            Shape2::Line(1, 2),
        ])
        .unwrap(),
        to_bytes(&BTreeMap::from([("k".to_string(), vec![1u16, 2])])).unwrap(),
        list_input(5),
        vec![],
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for seed in &seeds {
        decoded += decode_all(seed);
    }
    assert!(decoded >= seeds.len(), "the seeds decode");
    for _ in 0..20_000 {
        let mut input = if rng.below(4) == 0 {
            let len = rng.below(40);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 if !input.is_empty() => {
                    let i = rng.below(input.len());
                    input[i] = rng.next() as u8;
                }
                1 if !input.is_empty() => {
                    let i = rng.below(input.len());
                    input[i] ^= 1 << rng.below(8);
                }
                2 => {
                    let cut = rng.below(input.len() + 1);
                    input.truncate(cut);
                }
                3 => {
                    let i = rng.below(input.len() + 1);
                    input.insert(i, [0, 1, 0xff, rng.next() as u8][rng.below(4)]);
                }
                _ if input.len() >= 4 => {
                    // A length-like field set to something extreme.
                    let i = rng.below(input.len() - 3);
                    let v = [0u32, 1, 4, 0x7fff_ffff, u32::MAX][rng.below(5)];
                    input[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {}
            }
        }
        decoded += decode_all(&input);
    }
    assert!(
        decoded > 1000,
        "the mutations explore valid inputs too: {decoded}"
    );
}

#[test]
fn a_count_of_empty_elements_cannot_set_the_work() {
    // A `Vec<()>` of three: no element bytes, the count alone.
    let three = to_bytes(&vec![(); 3]).unwrap();
    assert_eq!(from_bytes::<Vec<()>>(&three).unwrap().len(), 3);
    // Eight bytes claiming u32::MAX of them are refused before any is read.
    let mut claim = 4u32.to_le_bytes().to_vec();
    claim.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(from_bytes::<Vec<()>>(&claim).is_err());
}
