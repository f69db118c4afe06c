//! What the gateway remembers of the jobs it saw submitted, so status polls
//! report changes only and carry the job's backend and program. Only jobs
//! submitted through this gateway are remembered (a poll of any other id
//! grows nothing), ids are bounded in length, and the table in size.

use std::collections::{HashMap, VecDeque};

use vigil_schema::QuantumJob;

/// Jobs remembered; the oldest submissions are forgotten first.
const REMEMBERED: usize = 100_000;

#[derive(Clone, Default)]
struct Memo {
    /// The agent that submitted it (None: a caller outside every agent).
    agent: Option<String>,
    backend: Option<String>,
    device_type: Option<String>,
    program: Option<String>,
    session_id: Option<String>,
    status: Option<String>,
}

pub struct Jobs {
    memos: HashMap<String, Memo>,
    order: VecDeque<String>,
    max_id_bytes: usize,
}

impl Jobs {
    pub fn new(max_id_bytes: usize) -> Self {
        Jobs {
            memos: HashMap::new(),
            order: VecDeque::new(),
            max_id_bytes,
        }
    }

    /// Whether a call by `agent` on job `id` may go through: a job this
    /// gateway saw submitted belongs to its submitter's agent, and another
    /// agent may not cancel, read or poll it. `Err(owner)` otherwise.
    pub fn may_touch(&self, id: &str, agent: Option<&str>) -> Result<(), Option<String>> {
        match self.memos.get(id) {
            Some(m) if m.agent.as_deref() != agent => Err(m.agent.clone()),
            _ => Ok(()),
        }
    }

    /// A submission's response named its job id: remember the job and who
    /// submitted it.
    pub fn submitted(&mut self, job: &QuantumJob, agent: Option<&str>) {
        let Some(id) = job.job_id.as_ref().filter(|i| i.len() <= self.max_id_bytes) else {
            return;
        };
        let memo = Memo {
            agent: agent.map(str::to_string),
            backend: job.backend.clone(),
            device_type: job.device_type.clone(),
            program: job.program.clone(),
            session_id: job.session_id.clone(),
            status: None,
        };
        if self.memos.insert(id.clone(), memo).is_none() {
            self.order.push_back(id.clone());
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.memos.remove(&old);
            }
        }
    }

    /// Complete a poll's record from its job's memo. `false`: an unchanged
    /// status, not worth a record.
    pub fn polled(
        &mut self,
        job: &mut QuantumJob,
        status_ok: bool,
        device_type: impl Fn(&str) -> &'static str,
    ) -> bool {
        let memo = job.job_id.as_ref().and_then(|id| self.memos.get_mut(id));
        let Some(memo) = memo else {
            // a job this gateway did not see submitted: recorded, not remembered
            if let Some(b) = job.backend.as_deref() {
                job.device_type = Some(device_type(b).to_string());
            }
            return true;
        };
        if status_ok && job.status.is_some() && job.status == memo.status {
            return false;
        }
        job.previous_status = memo.status.clone();
        if job.status.is_some() {
            memo.status = job.status.clone();
        }
        job.backend = job.backend.take().or_else(|| memo.backend.clone());
        job.device_type = memo
            .device_type
            .clone()
            .or_else(|| job.backend.as_deref().map(|b| device_type(b).to_string()));
        job.program = memo.program.clone();
        job.session_id = memo.session_id.clone();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> QuantumJob {
        QuantumJob {
            job_id: Some(id.into()),
            backend: Some("ibm_fez".into()),
            ..Default::default()
        }
    }

    #[test]
    fn polls_report_changes_of_submitted_jobs_only() {
        let mut jobs = Jobs::new(16);
        jobs.submitted(&job("a"), Some("alpha"));
        assert!(jobs.may_touch("a", Some("alpha")).is_ok());
        assert_eq!(jobs.may_touch("a", Some("beta")), Err(Some("alpha".into())));
        assert!(jobs.may_touch("a", None).is_err());
        // a job not seen submitted here is not ours to guard
        assert!(jobs.may_touch("other", Some("beta")).is_ok());
        let mut poll = |status: &str| {
            let mut p = QuantumJob {
                job_id: Some("a".into()),
                status: Some(status.into()),
                ..Default::default()
            };
            (jobs.polled(&mut p, true, |_| "qpu"), p)
        };
        let (news, p) = poll("Queued");
        assert!(news);
        assert_eq!(p.backend.as_deref(), Some("ibm_fez"));
        assert!(!poll("Queued").0);
        let (news, p) = poll("Running");
        assert!(news);
        assert_eq!(p.previous_status.as_deref(), Some("Queued"));
        // an id never submitted here, or one too long, grows nothing
        let mut other = job("zzz");
        assert!(jobs.polled(&mut other, true, |_| "qpu"));
        jobs.submitted(&job(&"x".repeat(17)), None);
        assert_eq!(jobs.memos.len(), 1);
    }
}
