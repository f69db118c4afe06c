//! Request paths in one canonical form, so that what the gateway matches
//! against its allowlist is exactly what it relays.
//!
//! A raw path is split on `/`, each segment percent-decoded, empty and `.`
//! segments dropped and `..` resolved. The result is a list of decoded
//! segments; [`NormalPath::encoded`] spells it again with one fixed
//! encoding. The gateway relays that spelling, never the client's, so a
//! path variant (`//jobs`, `/./jobs`, `/%6Aobs`, `/x/../jobs`, `%2e%2e`)
//! cannot be classified as one thing here and read as another upstream.
//!
//! Anything whose meaning an upstream could read differently is refused
//! rather than guessed at: malformed escapes, decoded bytes that are not
//! UTF-8, control characters, backslashes, `..` above the root, and dot
//! segments hidden behind an encoded slash (`a%2F..%2Fb`). Work is bounded:
//! the raw path and its segment count are capped before anything is decoded.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Longest raw path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
/// Most non-empty raw segments accepted (dot segments included).
pub const MAX_SEGMENTS: usize = 64;

/// Why a path was refused; `segment` is the raw segment's position (the
/// number of `/` before it, so 1-based for an absolute path, empty segments
/// counted) and `at` its byte offset in the raw path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("path has over {max} segments (segment {segment} at byte {at})")]
    TooManySegments {
        max: usize,
        segment: usize,
        at: usize,
    },
    #[error("segment {segment} at byte {at}: malformed percent escape")]
    BadEscape { segment: usize, at: usize },
    #[error("segment {segment} at byte {at}: decodes to bytes that are not UTF-8")]
    NotUtf8 { segment: usize, at: usize },
    #[error("segment {segment} at byte {at}: decodes to a control character")]
    ControlChar { segment: usize, at: usize },
    #[error("segment {segment} at byte {at}: backslash (read as a separator by some servers)")]
    Backslash { segment: usize, at: usize },
    #[error("segment {segment} at byte {at}: dot segment behind an encoded slash")]
    HiddenDotSegment { segment: usize, at: usize },
    #[error("segment {segment} at byte {at}: '..' climbs above the root")]
    AboveRoot { segment: usize, at: usize },
}

/// A path as decoded segments: no empty, `.` or `..` segments remain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NormalPath {
    /// Decoded segments; one may hold a `/` that was sent encoded (`%2F`),
    /// as Braket's ARNs do.
    pub segments: Vec<String>,
}

/// Bytes re-encoded in a segment: everything but RFC 3986 unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) and `:` `@`, which a path segment
/// may hold plainly. `/`, `%`, `?`, `#`, `;` and the rest are encoded, so a
/// segment stays one segment and means the same to every reader.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Normalise a raw request path (without its query string).
pub fn normalise(raw_path: &str) -> Result<NormalPath, PathError> {
    if raw_path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            len: raw_path.len(),
            max: MAX_PATH_BYTES,
        });
    }
    let mut segments: Vec<String> = Vec::new();
    let mut seen = 0usize;
    let mut at = 0usize;
    for (i, raw) in raw_path.split('/').enumerate() {
        let segment = i;
        let start = at;
        at += raw.len() + 1;
        if raw.is_empty() {
            // duplicate, leading or trailing slash
            continue;
        }
        seen += 1;
        if seen > MAX_SEGMENTS {
            return Err(PathError::TooManySegments {
                max: MAX_SEGMENTS,
                segment,
                at: start,
            });
        }
        let decoded = decode(raw).map_err(|e| e.at(segment, start))?;
        match decoded.as_str() {
            "" => {}
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot { segment, at: start });
                }
            }
            _ => {
                if decoded.contains('/')
                    && decoded
                        .split('/')
                        .any(|piece| piece == "." || piece == "..")
                {
                    // an upstream that decodes %2F before resolving dots
                    // would climb where this one did not
                    return Err(PathError::HiddenDotSegment { segment, at: start });
                }
                segments.push(decoded);
            }
        }
    }
    Ok(NormalPath { segments })
}

/// What went wrong decoding one segment, before its position is known.
enum DecodeError {
    BadEscape,
    NotUtf8,
    ControlChar,
    Backslash,
}

impl DecodeError {
    fn at(self, segment: usize, at: usize) -> PathError {
        match self {
            DecodeError::BadEscape => PathError::BadEscape { segment, at },
            DecodeError::NotUtf8 => PathError::NotUtf8 { segment, at },
            DecodeError::ControlChar => PathError::ControlChar { segment, at },
            DecodeError::Backslash => PathError::Backslash { segment, at },
        }
    }
}

/// Percent-decode one segment strictly: a `%` must start two hex digits
/// (lenient decoders keep `%zz` as it is, others reject it; refusing keeps
/// the two from disagreeing).
fn decode(raw: &str) -> Result<String, DecodeError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(DecodeError::BadEscape)?;
            let hi = hex_value(hex[0]).ok_or(DecodeError::BadEscape)?;
            let lo = hex_value(hex[1]).ok_or(DecodeError::BadEscape)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)?;
    if s.chars().any(char::is_control) {
        return Err(DecodeError::ControlChar);
    }
    if s.contains('\\') {
        return Err(DecodeError::Backslash);
    }
    Ok(s)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl NormalPath {
    /// The canonical spelling: `/` then the segments joined by `/`, each
    /// percent-encoded (upper-case hex) except for unreserved characters
    /// and `:` `@`. The root is `/`.
    pub fn encoded(&self) -> String {
        if self.segments.is_empty() {
            return "/".into();
        }
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            out.extend(utf8_percent_encode(s, SEGMENT));
        }
        out
    }

    /// The rest of the path after `prefix`, when `prefix` is its leading
    /// whole segments (`/api/v1` is a prefix of `/api/v1/jobs`, not of
    /// `/api/v10/jobs`).
    pub fn strip_prefix(&self, prefix: &NormalPath) -> Option<NormalPath> {
        self.segments
            .strip_prefix(prefix.segments.as_slice())
            .map(|rest| NormalPath {
                segments: rest.to_vec(),
            })
    }

    /// The segments as string slices, for matching.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(raw: &str) -> String {
        normalise(raw).unwrap().encoded()
    }

    #[test]
    fn variants_of_one_path_normalise_alike() {
        for raw in [
            "/api/v1/jobs",
            "/api/v1/jobs/",
            "/api/v1//jobs",
            "//api///v1/jobs//",
            "/api/v1/./jobs",
            "/./api/./v1/jobs/.",
            "/api/v1/%6Aobs",
            "/api/v1/%6aobs",
            "/%61pi/v1/jobs",
            "/api/x/../v1/jobs",
            "/api/v1/x/y/../../jobs",
            "/api/v1/x/%2e%2e/jobs",
            "/api/v1/x/%2E%2E/jobs",
            "/api/v1/x/.%2e/jobs",
            "/api/v1/%2e/jobs",
            "api/v1/jobs",
        ] {
            let p = normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(p.segments, ["api", "v1", "jobs"], "{raw}");
            assert_eq!(p.encoded(), "/api/v1/jobs", "{raw}");
        }
    }

    #[test]
    fn root_and_empty() {
        for raw in ["", "/", "//", "/.", "/a/..", "/./"] {
            assert_eq!(normalise(raw).unwrap(), NormalPath::default(), "{raw}");
            assert_eq!(enc(raw), "/", "{raw}");
        }
    }

    #[test]
    fn an_encoded_slash_stays_inside_its_segment() {
        let raw = "/quantum-task/arn%3Aaws%3Abraket%3Aus-east-1%3A1%3Aquantum-task%2Fabc";
        let p = normalise(raw).unwrap();
        assert_eq!(
            p.segments,
            [
                "quantum-task",
                "arn:aws:braket:us-east-1:1:quantum-task/abc"
            ]
        );
        // ':' may stand plainly in a segment; '/' may not
        assert_eq!(
            p.encoded(),
            "/quantum-task/arn:aws:braket:us-east-1:1:quantum-task%2Fabc"
        );
        // encoding is stable: the relayed form normalises to itself
        assert_eq!(normalise(&p.encoded()).unwrap(), p);
        let device = normalise("/device/arn:aws:braket:::device%2Fqpu%2Fionq%2FForte-1").unwrap();
        assert_eq!(
            device.segments[1],
            "arn:aws:braket:::device/qpu/ionq/Forte-1"
        );
    }

    #[test]
    fn encoded_form_escapes_all_but_unreserved() {
        let p = NormalPath {
            segments: vec![
                "a b?c#d;e%f".into(),
                "AZaz09-._~:@".into(),
                "é".into(),
                "x+y=z&w".into(),
            ],
        };
        assert_eq!(
            p.encoded(),
            "/a%20b%3Fc%23d%3Be%25f/AZaz09-._~:@/%C3%A9/x%2By%3Dz%26w"
        );
        assert_eq!(normalise(&p.encoded()).unwrap(), p);
    }

    #[test]
    fn strip_prefix_by_whole_segments() {
        let p = normalise("/api/v1/jobs/abc").unwrap();
        let prefix = normalise("/api/v1").unwrap();
        assert_eq!(p.strip_prefix(&prefix).unwrap().encoded(), "/jobs/abc");
        assert_eq!(p.strip_prefix(&NormalPath::default()), Some(p.clone()));
        assert_eq!(p.strip_prefix(&p).unwrap(), NormalPath::default());
        assert_eq!(p.strip_prefix(&normalise("/api/v").unwrap()), None);
        assert_eq!(p.strip_prefix(&normalise("/v1").unwrap()), None);
        assert_eq!(prefix.strip_prefix(&p), None);
    }

    #[test]
    fn refusals_say_what_and_where() {
        let cases: &[(&str, PathError)] = &[
            ("/..", PathError::AboveRoot { segment: 1, at: 1 }),
            ("/a/../../b", PathError::AboveRoot { segment: 3, at: 6 }),
            ("/%2e%2e/jobs", PathError::AboveRoot { segment: 1, at: 1 }),
            ("/a/%zz", PathError::BadEscape { segment: 2, at: 3 }),
            ("/a/%4", PathError::BadEscape { segment: 2, at: 3 }),
            ("/a/x%", PathError::BadEscape { segment: 2, at: 3 }),
            ("/a/%ff", PathError::NotUtf8 { segment: 2, at: 3 }),
            ("/a/%C3", PathError::NotUtf8 { segment: 2, at: 3 }),
            ("/jobs/a%00b", PathError::ControlChar { segment: 2, at: 6 }),
            ("/jobs/%0a", PathError::ControlChar { segment: 2, at: 6 }),
            ("/jobs/%7f", PathError::ControlChar { segment: 2, at: 6 }),
            ("/jobs/%C2%85", PathError::ControlChar { segment: 2, at: 6 }),
            ("/jobs/a\tb", PathError::ControlChar { segment: 2, at: 6 }),
            ("/jobs/%5C..", PathError::Backslash { segment: 2, at: 6 }),
            ("/jobs/a\\b", PathError::Backslash { segment: 2, at: 6 }),
            (
                "/jobs/x%2F..%2F..%2Fsessions",
                PathError::HiddenDotSegment { segment: 2, at: 6 },
            ),
            (
                "/jobs/%2F.",
                PathError::HiddenDotSegment { segment: 2, at: 6 },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw).as_ref(), Err(want), "{raw}");
        }
        let e = normalise("/a/%zz").unwrap_err().to_string();
        assert_eq!(e, "segment 2 at byte 3: malformed percent escape");
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        let long = "/a".repeat(MAX_PATH_BYTES);
        assert_eq!(
            normalise(&long),
            Err(PathError::TooLong {
                len: 2 * MAX_PATH_BYTES,
                max: MAX_PATH_BYTES
            })
        );
        let many = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(matches!(
            normalise(&many),
            Err(PathError::TooManySegments { segment: 65, .. })
        ));
        assert_eq!(
            normalise(&"/a".repeat(MAX_SEGMENTS))
                .unwrap()
                .segments
                .len(),
            64
        );
        // dot segments count: a path cannot make work out of ".." pairs
        let dots = "/a/..".repeat(MAX_SEGMENTS);
        assert!(matches!(
            normalise(&dots),
            Err(PathError::TooManySegments { .. })
        ));
        // slashes alone are bounded by the length
        assert_eq!(enc(&"/".repeat(MAX_PATH_BYTES)), "/");
        // one long segment up to the limit is fine; many escapes too
        let seg = format!("/{}", "%41".repeat((MAX_PATH_BYTES - 1) / 3));
        assert_eq!(
            normalise(&seg).unwrap().segments[0].len(),
            (MAX_PATH_BYTES - 1) / 3
        );
        // truncated multi-byte escapes at the very end
        assert!(normalise("/%E2%82").is_err());
        assert!(normalise("/%").is_err());
        assert!(normalise("/%%").is_err());
    }

    #[test]
    fn non_ascii_raw_text_is_kept_and_encoded() {
        // hyper hands over only ASCII, but the function takes any &str
        let p = normalise("/jobs/é").unwrap();
        assert_eq!(p.segments, ["jobs", "é"]);
        assert_eq!(p.encoded(), "/jobs/%C3%A9");
    }
}
