//! Reads the elements of one array out of a JSON object while the body is
//! still streaming in. A device listing of 50,000 devices is about 63 MB: it
//! is never held whole, and each element is parsed from its own bytes, which
//! serde_json does several times faster than reading through `io::Read`.
//!
//! How it stays exactly as strict as serde_json over the whole body: a small
//! scanner follows strings and brackets to find where each element of the
//! array begins and ends, and hands the element's bytes to serde_json. All the
//! rest of the body (the "skeleton", with every element replaced by `0`) is
//! kept and parsed by serde_json at the end. If the skeleton and every element
//! are valid JSON, putting the elements back gives valid JSON, so the body is
//! accepted exactly when serde_json would accept it whole. The scanner only
//! has to be right on valid JSON; on anything else the skeleton or an element
//! fails to parse.

use crate::http::BodyError;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::io::Read;

/// Bytes read from the body at a time.
const READ_CHUNK: usize = 64 << 10;

/// Most of a body kept outside the array. Both APIs send a few keys next to
/// it; a body with more than this around the array is not a listing.
const MAX_SKELETON: usize = 8 << 20;

/// Reads a JSON object from `reader` and hands `each` every element of the
/// array under `key` (the first one whose value is not `null`), in order, as
/// soon as it is complete. Other keys are only checked to be valid JSON. A
/// missing or `null` array is an error, and so is any invalid JSON; a body
/// that ends early is a `truncated` error.
///
/// `each` sees elements before the end of the body is checked: on an error,
/// whatever it collected must be thrown away.
pub fn each_element<R: Read>(
    mut reader: R,
    key: &str,
    mut each: impl FnMut(&RawValue),
) -> Result<(), BodyError> {
    let mut split = Splitter::new(key);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the response body: {e}").into()),
        };
        split.feed(&buf[..n], &mut each)?;
    }
    split.finish()
}

/// Where the scanner is relative to the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Outside it: bytes go to the skeleton.
    Outside,
    /// Inside it: bytes go to the current element, but for the commas and
    /// the closing bracket at the array's own level.
    Inside,
}

struct Splitter<'k> {
    key: &'k str,
    place: Place,
    /// Brackets open before the next byte (the object is 1, the array 2).
    depth: usize,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    skeleton: Vec<u8>,
    element: Vec<u8>,
    /// The last string at depth 1 in `skeleton` (start, end), a key when a
    /// `:` follows it.
    last_string: Option<(usize, usize)>,
    /// A member named `key` was just opened: an array value is the one.
    awaiting_value: bool,
    found: bool,
    elements: usize,
}

impl<'k> Splitter<'k> {
    fn new(key: &'k str) -> Self {
        Splitter {
            key,
            place: Place::Outside,
            depth: 0,
            in_string: false,
            escaped: false,
            skeleton: Vec::new(),
            element: Vec::new(),
            last_string: None,
            awaiting_value: false,
            found: false,
            elements: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8], each: &mut impl FnMut(&RawValue)) -> Result<(), BodyError> {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.place {
                Place::Inside => self.feed_inside(chunk, i, each)?,
                Place::Outside => {
                    self.feed_outside(chunk[i])?;
                    i + 1
                }
            };
        }
        Ok(())
    }

    /// One byte outside the array (the skeleton is small, so byte by byte).
    fn feed_outside(&mut self, b: u8) -> Result<(), BodyError> {
        if self.skeleton.len() >= MAX_SKELETON {
            return Err(format!(
                "more than {} MiB of the response is outside the \"{}\" array",
                MAX_SKELETON >> 20,
                self.key
            )
            .into());
        }
        self.skeleton.push(b);
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if let Some((start, _)) = self.last_string {
                    self.last_string = Some((start, self.skeleton.len()));
                }
            }
            return Ok(());
        }
        if is_whitespace(b) {
            return Ok(());
        }
        let awaiting = std::mem::take(&mut self.awaiting_value);
        match b {
            b'[' if awaiting && self.depth == 1 => {
                self.found = true;
                self.place = Place::Inside;
                self.depth = 2;
            }
            b'"' => {
                self.in_string = true;
                self.last_string = (self.depth == 1).then_some((self.skeleton.len() - 1, 0));
            }
            b':' if self.depth == 1 => {
                self.awaiting_value = !self.found && self.last_string_is_key();
                self.last_string = None;
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.last_string = None;
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                self.last_string = None;
            }
            _ => self.last_string = None,
        }
        Ok(())
    }

    fn last_string_is_key(&self) -> bool {
        match self.last_string {
            Some((start, end)) if end > start => {
                serde_json::from_slice::<String>(&self.skeleton[start..end])
                    .is_ok_and(|k| k == self.key)
            }
            _ => false,
        }
    }

    /// Bytes inside the array from `start`, up to the end of the chunk or
    /// until the array closes; returns where it stopped.
    fn feed_inside(
        &mut self,
        chunk: &[u8],
        start: usize,
        each: &mut impl FnMut(&RawValue),
    ) -> Result<usize, BodyError> {
        let mut i = start;
        // `chunk[run..i]` belongs to the current element and is not copied yet.
        let mut run = start;
        while i < chunk.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                    Some(at) => {
                        i += at;
                        if chunk[i] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        i += 1;
                    }
                    None => i = chunk.len(),
                }
                continue;
            }
            match chunk[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b @ (b',' | b']') if self.depth == 2 => {
                    self.element.extend_from_slice(&chunk[run..i]);
                    self.emit(each)?;
                    self.skeleton.push(b);
                    if b == b']' {
                        self.place = Place::Outside;
                        self.depth = 1;
                        return Ok(i + 1);
                    }
                    run = i + 1;
                }
                b'}' | b']' if self.depth > 2 => self.depth -= 1,
                b'}' if self.depth == 2 => {
                    return Err(format!(
                        "invalid JSON: `}}` closes the \"{}\" array (after {} elements)",
                        self.key, self.elements
                    )
                    .into());
                }
                _ => {}
            }
            i += 1;
        }
        self.element.extend_from_slice(&chunk[run..]);
        Ok(chunk.len())
    }

    /// Parses the element just ended, if there is one (`[]` and the gap of
    /// `[1,,2]` have none: the skeleton gets nothing there and fails to parse
    /// where the JSON is wrong).
    fn emit(&mut self, each: &mut impl FnMut(&RawValue)) -> Result<(), BodyError> {
        if self.element.iter().all(|&b| is_whitespace(b)) {
            self.element.clear();
            return Ok(());
        }
        let raw: &RawValue = serde_json::from_slice(&self.element).map_err(|e| {
            BodyError::from(format!(
                "element {} of the \"{}\" array: {e}",
                self.elements + 1,
                self.key
            ))
        })?;
        each(raw);
        self.element.clear();
        self.elements += 1;
        self.skeleton.push(b'0');
        Ok(())
    }

    /// The body has ended: checks the skeleton.
    fn finish(self) -> Result<(), BodyError> {
        if self.place == Place::Inside {
            return Err(BodyError {
                detail: format!(
                    "the response ended inside the \"{}\" array, after {} elements",
                    self.key, self.elements
                ),
                truncated: true,
                bad_number_at: None,
            });
        }
        let mut de = serde_json::Deserializer::from_slice(&self.skeleton);
        let mut counted = 0;
        let checked = serde::Deserializer::deserialize_map(
            &mut de,
            Envelope {
                key: self.key,
                count: &mut counted,
            },
        )
        .and_then(|()| de.end());
        if let Err(e) = checked {
            return Err(crate::http::cut_short_in(&self.skeleton, e.into()));
        }
        if counted != self.elements {
            return Err(format!(
                "internal error: the \"{}\" array has {counted} elements, {} were read",
                self.key, self.elements
            )
            .into());
        }
        Ok(())
    }
}

/// JSON's four whitespace bytes (not `u8::is_ascii_whitespace`, which also
/// takes form feed).
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The skeleton: an object whose first non-null `key` is an array, other
/// members skipped; counts the array's elements.
struct Envelope<'a> {
    key: &'a str,
    count: &'a mut usize,
}

impl<'de> Visitor<'de> for Envelope<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with a \"{}\" array", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key && !found {
                found = map.next_value_seed(Elements(&mut *self.count))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !found {
            return Err(serde::de::Error::custom(format!(
                "no \"{}\" array in the response",
                self.key
            )));
        }
        Ok(())
    }
}

/// The array's value: an array (true, its elements counted), or null (false).
struct Elements<'a>(&'a mut usize);

impl<'de> DeserializeSeed<'de> for Elements<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {
            *self.0 += 1;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json makes of the whole body: the elements' text, or an error.
    fn whole(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            devices: Option<Vec<&'a RawValue>>,
        }
        let env: Envelope = serde_json::from_slice(body)?;
        match env.devices {
            Some(d) => Ok(d.iter().map(|r| r.get().to_string()).collect()),
            None => Err(serde::de::Error::custom("no devices")),
        }
    }

    /// The same body fed in parts of `part` bytes.
    fn split(body: &[u8], part: usize) -> Result<Vec<String>, BodyError> {
        let mut out = Vec::new();
        let mut s = Splitter::new("devices");
        let mut each = |r: &RawValue| out.push(r.get().to_string());
        for c in body.chunks(part.max(1)) {
            s.feed(c, &mut each)?;
        }
        s.finish()?;
        Ok(out)
    }

    const GOOD: &[&str] = &[
        r#"{"devices":[]}"#,
        r#"{"devices":[{"nodeId":"a","tags":["x","y"]},{"nodeId":"b\"],}{[","n":{"m":[1,2,{}]}}]}"#,
        " \r\n{ \"other\" : [1, {\"devices\": [9]}], \"devices\" :\n [ 1 , \"s\" , null , [] , {} ] , \"x\": {} }\n ",
        r#"{"dev\u0069ces":[{"a":"\\"},{"b":"\\\""}]}"#,
        r#"{"devices":[{"a":"é ✓ \ud83d\ude00"}],"count":-1.5e3}"#,
        r#"{"d":"devices","devices":[0.5,-0,1E+2]}"#,
    ];

    const BAD: &[&str] = &[
        "",
        "[]",
        "[[{}]]",
        "{}",
        r#"{"devices":null}"#,
        r#"{"devices":5}"#,
        r#"{"devices":[1,]}"#,
        r#"{"devices":[,1]}"#,
        r#"{"devices":[1,,2]}"#,
        r#"{"devices":[1 2]}"#,
        r#"{"devices":[{]}"#,
        r#"{"devices":[{"a":1}}]}"#,
        r#"{"devices":[{"a":1]]}"#,
        "{\"devices\":[\x0c1]}",
        r#"{"devices":[]} x"#,
        r#"{"devices":[]}{}"#,
        r#"{"devices" [1]}"#,
        r#"{"devices":[1],}"#,
        r#"{"devices":[1]]"#,
        r#"{"devices":[1],"devices":5,"x":tru}"#,
        r#"{"x":[},"devices":[1]}"#,
        r#"<html><body>502 Bad Gateway</body></html>"#,
    ];

    #[test]
    fn good_bodies_read_as_serde_json_reads_them_whole_in_any_parts() {
        for body in GOOD {
            let want = whole(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            for part in [1, 2, 3, 7, 64, body.len()] {
                assert_eq!(
                    split(body.as_bytes(), part).unwrap(),
                    want,
                    "{body} in {part}s"
                );
            }
        }
    }

    #[test]
    fn bad_bodies_are_refused_in_any_parts() {
        for body in BAD {
            // serde's derived envelope also takes the positional form.
            if !body.starts_with('[') {
                assert!(whole(body.as_bytes()).is_err(), "{body}");
            }
            for part in [1, 2, 5, body.len()] {
                let e = split(body.as_bytes(), part).unwrap_err();
                assert!(!e.detail.is_empty());
            }
        }
        let e = split(br#"{"devices":[{"nodeId":"a"}, {"nodeId":}]}"#, 4).unwrap_err();
        assert!(
            e.detail.starts_with("element 2 of the \"devices\" array"),
            "{e:?}"
        );
        assert!(!e.truncated);
    }

    #[test]
    fn a_good_body_cut_anywhere_is_truncated() {
        for body in GOOD {
            let end = body.trim_end().len();
            for cut in 1..end {
                let short = &body.as_bytes()[..cut];
                for part in [1, 3, cut] {
                    let e = split(short, part).unwrap_err();
                    assert!(e.truncated, "{:?} in {part}s: {e:?}", &body[..cut]);
                }
            }
        }
    }

    #[test]
    fn junk_or_a_bad_number_inside_the_body_is_not_a_cut() {
        for body in [
            &br#"{"devices":[]} x"#[..],
            br#"{"devices":[1.]}"#,
            b"{\"devices\":[], \"n\": 1.\n}",
        ] {
            assert!(!split(body, 3).unwrap_err().truncated, "{body:?}");
        }
        // Cut inside a number after the array: still a cut.
        assert!(split(br#"{"devices":[],"n":1."#, 3).unwrap_err().truncated);
    }

    #[test]
    fn the_first_array_that_is_not_null_is_read() {
        // serde's derived envelope refuses a repeated key; the listing takes
        // the first non-null one, as the streaming parser always did.
        let body = br#"{"devices":null,"devices":[{"n":1}],"devices":[{"n":2}]}"#;
        assert_eq!(split(body, 5).unwrap(), vec![r#"{"n":1}"#]);
    }

    #[test]
    fn too_much_outside_the_array_is_refused() {
        let mut body = br#"{"pad":""#.to_vec();
        body.resize(MAX_SKELETON + 10, b'x');
        body.extend_from_slice(br#"","devices":[]}"#);
        let e = split(&body, READ_CHUNK).unwrap_err();
        assert!(e.detail.contains("outside the \"devices\" array"), "{e:?}");
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(Into::into),
            "[a-z\"\\\\\\[\\]{},: é]{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\"\\\\]{0,5}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_listing_reads_the_same_in_parts(
            devices in prop::collection::vec(json_value(), 0..6),
            other in json_value(),
            pretty in any::<bool>(),
            part in 1usize..40,
        ) {
            let doc = serde_json::json!({"a": other, "devices": devices});
            let body = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap();
            prop_assert_eq!(split(&body, part).unwrap(), whole(&body).unwrap());
            let cut = body.len() / 2;
            prop_assert!(split(&body[..cut], part).unwrap_err().truncated);
        }
    }
}
