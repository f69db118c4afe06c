//! Per (host, kind) batch sequence numbers: a batch seen before (a resend
//! after a failed delivery, a replay) is dropped; a jump is a gap, reported
//! (a collector `loss` event or a corrupt spool record accounts for it).

use std::collections::HashMap;

use vigil_schema::EventKind;

#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    /// New, after `missing` batches that never came.
    AfterGap {
        missing: u64,
    },
}

#[derive(Default)]
pub struct Sequences {
    /// (host, kind) → the highest (seq, index) taken.
    last: HashMap<(String, EventKind), (u64, Option<u32>)>,
}

impl Sequences {
    pub fn see(&mut self, host: &str, kind: EventKind, seq: u64, index: Option<u32>) -> Seen {
        let key = (host.to_string(), kind);
        match self.last.get_mut(&key) {
            None => {
                self.last.insert(key, (seq, index));
                Seen::New
            }
            Some(last) => {
                if (seq, index) <= *last {
                    return Seen::Duplicate;
                }
                let missing = seq.saturating_sub(last.0 + 1);
                *last = (seq, index);
                if missing > 0 {
                    Seen::AfterGap { missing }
                } else {
                    Seen::New
                }
            }
        }
    }

    pub fn streams(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_gaps() {
        let mut s = Sequences::default();
        let k = EventKind::File;
        assert_eq!(s.see("h", k, 1, None), Seen::New);
        assert_eq!(s.see("h", k, 2, None), Seen::New);
        assert_eq!(s.see("h", k, 2, None), Seen::Duplicate);
        assert_eq!(s.see("h", k, 1, None), Seen::Duplicate);
        assert_eq!(s.see("h", k, 5, None), Seen::AfterGap { missing: 2 });
        assert_eq!(s.see("h", EventKind::Network, 5, None), Seen::New);
        assert_eq!(s.see("g", k, 1, None), Seen::New);
        // JSON: one message per event
        assert_eq!(s.see("h", k, 6, Some(0)), Seen::New);
        assert_eq!(s.see("h", k, 6, Some(1)), Seen::New);
        assert_eq!(s.see("h", k, 6, Some(1)), Seen::Duplicate);
    }
}
