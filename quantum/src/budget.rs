//! The per-body budget behind [`ParseLimits`]: the counters every parser
//! charges, the periodic deadline check, and the byte-level JSON pre-scan
//! that refuses a body before serde_json builds a `Value` for it (its
//! recursion limit is 128, and it has no limit on elements at all: an
//! 8 MiB array of small values cost 300 MiB as `Value`s).

use std::time::Instant;

use crate::{ParseError, ParseLimits};

/// Extra elements an object holding keys counts for: serde_json's map
/// allocates a node of 11 entries (about 640 bytes) for its first key,
/// where a scalar costs a 32-byte `Value` and perhaps a short string.
pub const OBJECT_WEIGHT: usize = 8;

/// Units of work between two looks at the clock.
const DEADLINE_EVERY: u64 = 4096;

/// Bytes of JSON pre-scanned between two looks at the clock.
const JSON_DEADLINE_EVERY: usize = 1 << 16;

/// A limit run into: the [`ParseLimits`] field, and what exceeded it.
/// The parser that hit it adds where ([`Hit::error`]).
#[derive(Debug)]
pub(crate) struct Hit {
    pub limit: &'static str,
    pub message: String,
}

impl Hit {
    /// The error for `part`, `place` (e.g. `line 4`) before the message.
    pub fn error(self, part: &'static str, place: &str) -> ParseError {
        let message = if place.is_empty() {
            self.message
        } else {
            format!("{place}: {}", self.message)
        };
        ParseError::limit(part, self.limit, message)
    }
}

/// What one body has used of its [`ParseLimits`] so far.
pub(crate) struct Budget<'l> {
    pub limits: &'l ParseLimits,
    json_elements: usize,
    tokens: usize,
    work: u64,
    decompressed: u64,
    /// Work (or tokens) since the clock was last read.
    unchecked: u64,
}

impl<'l> Budget<'l> {
    pub fn new(limits: &'l ParseLimits) -> Self {
        Self {
            limits,
            json_elements: 0,
            tokens: 0,
            work: 0,
            decompressed: 0,
            unchecked: 0,
        }
    }

    /// Charge `units` of work (wires touched); reads the clock every
    /// [`DEADLINE_EVERY`] units.
    pub fn work(&mut self, units: u64) -> Result<(), Hit> {
        self.work = self.work.saturating_add(units);
        if self.work > self.limits.max_work {
            return Err(Hit {
                limit: "max_work",
                message: format!(
                    "more than {} units of work (operations times the wires they touch)",
                    self.limits.max_work
                ),
            });
        }
        self.tick(units)
    }

    /// Count toward the deadline check without charging work: steps whose
    /// number another limit already bounds (statements, tokens).
    pub fn tick(&mut self, units: u64) -> Result<(), Hit> {
        self.unchecked = self.unchecked.saturating_add(units);
        if self.unchecked >= DEADLINE_EVERY {
            self.unchecked = 0;
            self.deadline()?;
        }
        Ok(())
    }

    pub fn deadline(&self) -> Result<(), Hit> {
        match self.limits.deadline {
            Some(d) if Instant::now() >= d => Err(Hit {
                limit: "deadline",
                message: "parse deadline passed".into(),
            }),
            _ => Ok(()),
        }
    }

    /// One more OpenQASM token.
    pub fn token(&mut self) -> Result<(), Hit> {
        self.tokens += 1;
        if self.tokens > self.limits.max_tokens {
            return Err(Hit {
                limit: "max_tokens",
                message: format!("more than {} tokens", self.limits.max_tokens),
            });
        }
        self.tick(1)
    }

    /// Distinct wires a circuit may touch: each holds an entry in the depth
    /// map, so they are bounded tighter than work.
    pub fn max_wires(&self) -> usize {
        usize::try_from(self.limits.max_work / 16).unwrap_or(usize::MAX)
    }

    /// How many more bytes may be inflated.
    pub fn inflate_room(&self) -> u64 {
        self.limits
            .max_decompressed_bytes
            .saturating_sub(self.decompressed)
    }

    pub fn inflated(&mut self, bytes: u64) {
        self.decompressed = self.decompressed.saturating_add(bytes);
    }

    /// Walk JSON text without building it: refuse it, naming the byte
    /// offset, when it nests deeper than `max_depth` or (with what this
    /// body has already used) holds more than `max_json_elements`.
    /// Malformed text is left for serde_json to report.
    pub fn prescan_json(&mut self, b: &[u8]) -> Result<(), Hit> {
        let max_elements = self.limits.max_json_elements;
        let max_depth = self.limits.max_depth;
        let mut elements = self.json_elements;
        let mut depth = 0usize;
        let mut next_clock = JSON_DEADLINE_EVERY;
        let mut i = 0;
        while i < b.len() {
            let at = i;
            match b[i] {
                b'"' => {
                    // a string (value or key): one element
                    elements += 1;
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                open @ (b'[' | b'{') => {
                    depth += 1;
                    if depth > max_depth {
                        return Err(Hit {
                            limit: "max_depth",
                            message: format!("byte {at}: JSON nested deeper than {max_depth}"),
                        });
                    }
                    elements += 1;
                    i += 1;
                    if open == b'{' {
                        let next = b[i..].iter().find(|c| !c.is_ascii_whitespace());
                        if next.is_some_and(|&c| c != b'}') {
                            elements += OBJECT_WEIGHT;
                        }
                    }
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => i += 1,
                _ => {
                    // a number, true, false, null (or garbage serde_json will refuse)
                    elements += 1;
                    while i < b.len()
                        && !matches!(
                            b[i],
                            b'"' | b'['
                                | b'{'
                                | b']'
                                | b'}'
                                | b','
                                | b':'
                                | b' '
                                | b'\t'
                                | b'\n'
                                | b'\r'
                        )
                    {
                        i += 1;
                    }
                }
            }
            if elements > max_elements {
                return Err(Hit {
                    limit: "max_json_elements",
                    message: format!("byte {at}: more than {max_elements} JSON elements"),
                });
            }
            if i >= next_clock {
                next_clock = i + JSON_DEADLINE_EVERY;
                self.deadline()?;
            }
        }
        self.json_elements = elements;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(limits: &ParseLimits, text: &str) -> Result<usize, Hit> {
        let mut b = Budget::new(limits);
        b.prescan_json(text.as_bytes())?;
        Ok(b.json_elements)
    }

    #[test]
    fn counts_values_and_keys() {
        let l = ParseLimits::default();
        assert_eq!(scan(&l, "[]").unwrap(), 1);
        assert_eq!(scan(&l, "[1, true, null, \"a\\\"]\"]").unwrap(), 5);
        // {, key, value, and the weight of a non-empty object
        assert_eq!(scan(&l, "{\"a\": -1.5e3}").unwrap(), 3 + OBJECT_WEIGHT);
        assert_eq!(scan(&l, "{ }").unwrap(), 1);
        // brackets inside strings are text
        assert_eq!(scan(&l, "[\"[[[[{{{{\"]").unwrap(), 2);
    }

    #[test]
    fn refuses_deep_and_wide_json() {
        let l = ParseLimits {
            max_json_elements: 10,
            max_depth: 3,
            ..ParseLimits::default()
        };
        assert!(scan(&l, "[[[]]]").is_ok());
        let hit = scan(&l, "[[[[]]]]").unwrap_err();
        assert_eq!(hit.limit, "max_depth");
        assert_eq!(hit.message, "byte 3: JSON nested deeper than 3");
        let hit = scan(&l, "[0,0,0,0,0,0,0,0,0,0,0]").unwrap_err();
        assert_eq!(hit.limit, "max_json_elements");
        assert!(
            hit.message.contains("more than 10 JSON elements"),
            "{hit:?}"
        );
        // the count runs over every JSON text of one body
        let mut b = Budget::new(&l);
        b.prescan_json(b"[0,0,0,0,0]").unwrap();
        assert!(b.prescan_json(b"[0,0,0,0,0]").is_err());
    }

    #[test]
    fn deadline_is_checked() {
        let l = ParseLimits {
            deadline: Some(Instant::now()),
            ..ParseLimits::default()
        };
        let mut b = Budget::new(&l);
        let hit = (0..).find_map(|_| b.work(1).err()).unwrap();
        assert_eq!(hit.limit, "deadline");
        let big = format!("[{}0]", "0,".repeat(100_000));
        assert_eq!(scan(&l, &big).unwrap_err().limit, "deadline");
    }
}
