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
        self.open.insert(key.clone(), candidate);
        self.changed.insert(key);
    }

    /// The versions to write: every alert raised or merged into since the
    /// last call, stamped `detected_at`.
    pub fn take_changed(&mut self, now_wall_ms: i64) -> Vec<Alert> {
        let mut out: Vec<Alert> = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|k| self.open.get(&k).cloned())
            .collect();
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
