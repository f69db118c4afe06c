//! Suppression: repeats of a finding (same rule and group key) within the
//! rule's `suppress` period merge into the alert already raised, counted,
//! instead of raising another. Every finding id ever seen is remembered
//! (for the window's horizon), so a finding found again — the next
//! evaluation, or a replay after a restart — changes nothing.

use std::collections::{BTreeSet, HashMap};

use super::{alert_id, Alert, MAX_EVENT_REFS, MAX_MERGED_IDS};
use crate::rules::engine::Finding;
use crate::rules::model::Rule;

#[derive(Default)]
pub struct Suppressor {
    /// Finding id → event time of the finding: ids already raised or merged.
    known: HashMap<String, i64>,
    /// (rule id, group key) → the alert repeats merge into.
    open: HashMap<(String, String), Alert>,
    /// Alerts changed since the last [`Suppressor::take_changed`].
    changed: BTreeSet<(String, String)>,
    /// Changed alerts no longer open (a later one of their group took their
    /// place before they were taken): still to be written.
    closed: Vec<Alert>,
}

impl Suppressor {
    /// Remember stored alerts (their latest versions) so that a restarted
    /// detector neither raises them again nor counts their repeats twice.
    pub fn seed(&mut self, alerts: Vec<Alert>, suppress_of: impl Fn(&str) -> Option<i64>) {
        for a in alerts {
            self.known.insert(a.id.clone(), a.time);
            for m in &a.merged_ids {
                self.known.insert(m.clone(), a.last_time);
            }
            if suppress_of(&a.rule_id).is_some() {
                let key = (a.rule_id.clone(), a.group_key.clone());
                match self.open.get(&key) {
                    Some(open) if open.time >= a.time => {}
                    _ => {
                        self.open.insert(key, a);
                    }
                }
            }
        }
    }

    /// Whether a finding id was already raised or merged.
    pub fn is_known(&self, id: &str) -> bool {
        self.known.contains_key(id)
    }

    /// Take one finding: a new alert, a merge into an open one, or nothing
    /// (already known).
    pub fn offer(&mut self, rule: &Rule, finding: &Finding, now_wall_ms: i64) {
        // rules find the same findings every evaluation: check the id before
        // building the alert (evidence JSON, copies of every field)
        let id = alert_id(&rule.id, &finding.group_key, finding.window_start_ms);
        if self.known.contains_key(&id) {
            return;
        }
        let candidate = Alert::raise(rule, finding, now_wall_ms);
        self.known.insert(candidate.id.clone(), candidate.time);
        let key = (rule.id.clone(), finding.group_key.clone());
        let period = rule.suppress.as_millis() as i64;
        if let Some(open) = self.open.get_mut(&key) {
            if (candidate.time - open.time).abs() < period {
                open.count += 1;
                open.last_time = open.last_time.max(candidate.time);
                if open.merged_ids.len() < MAX_MERGED_IDS {
                    open.merged_ids.push(candidate.id);
                }
                for r in candidate.event_refs {
                    if open.event_refs.len() >= MAX_EVENT_REFS {
                        break;
                    }
                    if !open.event_refs.contains(&r) {
                        open.event_refs.push(r);
                    }
                }
                self.changed.insert(key);
                return;
            }
        }
        // the alert this one replaces may not have been written yet
        if let Some(old) = self.open.insert(key.clone(), candidate) {
            if self.changed.contains(&key) {
                self.closed.push(old);
            }
        }
        self.changed.insert(key);
    }

    /// The versions to write: every alert raised or merged into since the
    /// last call, stamped `detected_at`.
    pub fn take_changed(&mut self, now_wall_ms: i64) -> Vec<Alert> {
        let mut out: Vec<Alert> = std::mem::take(&mut self.closed);
        out.extend(
            std::mem::take(&mut self.changed)
                .into_iter()
                .filter_map(|k| self.open.get(&k).cloned()),
        );
        for a in &mut out {
            a.detected_at = now_wall_ms;
        }
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        out
    }

    /// Forget what event time has left behind: ids older than `horizon_ms`,
    /// open alerts whose period ended before it.
    pub fn prune(&mut self, horizon_ms: i64, suppress_of: impl Fn(&str) -> i64) {
        self.known.retain(|_, t| *t >= horizon_ms);
        self.open
            .retain(|(rule, _), a| a.last_time + suppress_of(rule) >= horizon_ms);
    }

    pub fn remembered(&self) -> (usize, usize) {
        (self.known.len(), self.open.len())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rules::model::parse;

    const RULE: &str = "r.one";
    const T: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    /// A rule through the real parser: the suppress period is the only input that matters.
    fn rule(suppress: &str) -> Rule {
        let text = format!(
            "id: {RULE}\ntitle: T\ndescription: D\nseverity: high\nlookback: 1m\n\
             suppress: {suppress}\nquery: SELECT host_id, time FROM file\nexamples:\n  \
             - {{name: y, fires: true, events: []}}\n  - {{name: n, fires: false, events: []}}\n"
        );
        parse(&text, Path::new("r.yaml")).unwrap()
    }

    /// Window start = time, so findings at different times have different ids.
    fn finding(key: &str, time_ms: i64, refs: &[&str]) -> Finding {
        Finding {
            host_id: "h".into(),
            time_ms,
            summary: "s".into(),
            agent_id: None,
            agent_session: None,
            group_key: key.into(),
            window_start_ms: time_ms,
            event_refs: refs.iter().map(|r| r.to_string()).collect(),
            evidence: Default::default(),
        }
    }

    fn id(key: &str, time_ms: i64) -> String {
        alert_id(RULE, key, time_ms)
    }

    #[test]
    fn suppress_merges_a_repeat_within_the_period() {
        let r = rule("10m");
        let mut s = Suppressor::default();
        s.offer(&r, &finding("h/a", T, &["e1", "e2"]), 1);
        s.offer(&r, &finding("h/a", T + MIN, &["e2", "e3"]), 2);
        let out = s.take_changed(5);
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!(a.id, id("h/a", T));
        assert_eq!(a.count, 2);
        assert_eq!((a.time, a.last_time), (T, T + MIN));
        assert_eq!(a.merged_ids, vec![id("h/a", T + MIN)]);
        assert_eq!(a.event_refs, vec!["e1", "e2", "e3"]);
        assert_eq!(a.detected_at, 5);
    }

    #[test]
    fn suppress_keeps_other_group_keys_and_rules_apart() {
        let r = rule("10m");
        let mut other = rule("10m");
        other.id = "r.two".into();
        let mut s = Suppressor::default();
        s.offer(&r, &finding("h/a", T, &[]), 1);
        s.offer(&r, &finding("h/b", T + 1, &[]), 1);
        s.offer(&other, &finding("h/a", T + 2, &[]), 1);
        let out = s.take_changed(1);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out.iter().all(|a| a.count == 1 && a.merged_ids.is_empty()));
    }

    #[test]
    fn suppress_raises_a_new_alert_after_the_period() {
        let r = rule("10m");
        let mut s = Suppressor::default();
        s.offer(&r, &finding("h/a", T, &[]), 1);
        assert_eq!(s.take_changed(1).len(), 1);
        let later = T + 10 * MIN + 1;
        s.offer(&r, &finding("h/a", later, &[]), 2);
        let out = s.take_changed(2);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].id, id("h/a", later));
        assert_eq!((out[0].count, out[0].time), (1, later));
        assert!(out[0].merged_ids.is_empty());
        // the new alert is now the one repeats merge into, not the first
        s.offer(&r, &finding("h/a", later + MIN, &[]), 3);
        let out = s.take_changed(3);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].id.as_str(), out[0].count),
            (id("h/a", later).as_str(), 2)
        );
    }

    #[test]
    fn suppress_writes_both_alerts_when_the_second_comes_before_the_first_is_taken() {
        // one evaluation finds a group twice, more than a period apart (a
        // lookback longer than the suppress period, or catching up)
        let r = rule("10m");
        let mut s = Suppressor::default();
        let later = T + 11 * MIN;
        s.offer(&r, &finding("h/a", T, &[]), 1);
        s.offer(&r, &finding("h/a", later, &[]), 1);
        let ids: Vec<String> = s.take_changed(1).into_iter().map(|a| a.id).collect();
        assert_eq!(ids, [id("h/a", T), id("h/a", later)]);
        assert!(s.take_changed(2).is_empty());
    }

    #[test]
    fn suppress_ignores_a_finding_found_again() {
        let r = rule("10m");
        let mut s = Suppressor::default();
        let (f1, f2) = (finding("h/a", T, &["e1"]), finding("h/a", T + MIN, &["e2"]));
        s.offer(&r, &f1, 1);
        s.offer(&r, &f1, 1); // same evaluation twice, before anything is taken
        s.offer(&r, &f2, 1);
        assert_eq!(s.take_changed(1)[0].count, 2);
        // the next evaluation finds both again
        s.offer(&r, &f1, 2);
        s.offer(&r, &f2, 2);
        assert!(s.take_changed(2).is_empty());
        // and the count was not bumped silently: a real repeat makes it 3
        s.offer(&r, &finding("h/a", T + 2 * MIN, &[]), 3);
        let out = s.take_changed(3);
        assert_eq!((out.len(), out[0].count), (1, 3));
        assert_eq!(out[0].merged_ids.len(), 2);
    }

    #[test]
    fn suppress_seeded_alerts_are_not_raised_or_counted_again() {
        let r = rule("10m");
        let (f1, f2) = (finding("h/a", T, &["e1"]), finding("h/a", T + MIN, &["e2"]));
        // what the previous run stored
        let mut before = Suppressor::default();
        before.offer(&r, &f1, 1);
        before.offer(&r, &f2, 1);
        let stored = before.take_changed(1);

        let mut s = Suppressor::default();
        s.seed(stored, |rule_id| (rule_id == RULE).then_some(10 * MIN));
        assert!(s.is_known(&id("h/a", T)) && s.is_known(&id("h/a", T + MIN)));
        // seeding is not a change: nothing to write again
        assert!(s.take_changed(2).is_empty());
        s.offer(&r, &f1, 2);
        s.offer(&r, &f2, 2);
        assert!(s.take_changed(2).is_empty());
        s.offer(&r, &finding("h/a", T + 2 * MIN, &["e3"]), 3);
        let out = s.take_changed(3);
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!((a.id.clone(), a.count), (id("h/a", T), 3));
        assert_eq!(
            a.merged_ids,
            vec![id("h/a", T + MIN), id("h/a", T + 2 * MIN)]
        );
        assert_eq!(a.event_refs, vec!["e1", "e2", "e3"]);
        assert_eq!((a.last_time, a.detected_at), (T + 2 * MIN, 3));
    }

    #[test]
    fn suppress_seed_keeps_the_latest_alert_of_a_group_open() {
        let r = rule("10m");
        let mut before = Suppressor::default();
        before.offer(&r, &finding("h/a", T, &[]), 1);
        before.offer(&r, &finding("h/a", T + 20 * MIN, &[]), 1);
        let mut stored = before.take_changed(1);
        // stored order must not matter: put the newer alert first
        stored.sort_by_key(|a| -a.time);
        let mut s = Suppressor::default();
        s.seed(stored, |_| Some(10 * MIN));
        s.offer(&r, &finding("h/a", T + 21 * MIN, &[]), 2);
        let out = s.take_changed(2);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].id.clone(), out[0].count),
            (id("h/a", T + 20 * MIN), 2)
        );
    }

    #[test]
    fn suppress_caps_merged_ids_and_event_refs_but_keeps_counting() {
        let r = rule("1h");
        let mut s = Suppressor::default();
        let repeats = MAX_MERGED_IDS as i64 + 5;
        for i in 0..=repeats {
            s.offer(&r, &finding("h/a", T + i, &[&format!("e{i}")]), 1);
        }
        let out = s.take_changed(1);
        assert_eq!(out.len(), 1);
        let a = &out[0];
        assert_eq!(a.count, repeats as u64 + 1);
        // the first ids are kept, later ones dropped
        let expected: Vec<String> = (1..=MAX_MERGED_IDS as i64)
            .map(|i| id("h/a", T + i))
            .collect();
        assert_eq!(a.merged_ids, expected);
        let refs: Vec<String> = (0..MAX_EVENT_REFS).map(|i| format!("e{i}")).collect();
        assert_eq!(a.event_refs, refs);
        // an id past the cap is still known in memory: found again, not counted
        s.offer(&r, &finding("h/a", T + repeats, &[]), 2);
        assert!(s.take_changed(2).is_empty());
    }

    #[test]
    fn suppress_take_changed_returns_each_change_once() {
        let r = rule("10m");
        let mut s = Suppressor::default();
        s.offer(&r, &finding("h/a", T, &[]), 1);
        s.offer(&r, &finding("h/b", T + 1, &[]), 1);
        s.offer(&r, &finding("h/a", T + 2, &[]), 1);
        let out = s.take_changed(7);
        let got: Vec<(&str, u64, i64)> = out
            .iter()
            .map(|a| (a.group_key.as_str(), a.count, a.detected_at))
            .collect();
        // one version per alert, however many merges, in time order
        assert_eq!(got, vec![("h/a", 2, 7), ("h/b", 1, 7)]);
        assert!(s.take_changed(8).is_empty());
        s.offer(&r, &finding("h/b", T + 3, &[]), 9);
        let out = s.take_changed(9);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].group_key.as_str(), out[0].count, out[0].detected_at),
            ("h/b", 2, 9)
        );
        assert!(s.take_changed(10).is_empty());
    }
}
