//! Each provider's allowlist: the (method, path) operations the gateway
//! relays, declared once as a table, each with its policy class. Paths are
//! matched on normalised segments ([`crate::path`]) after the provider's
//! optional version prefix, exactly — never by suffix — so `/x/jobs` or a
//! path variant is not mistaken for a submission, and anything not in the
//! table is not relayed in enforce mode.

use crate::path::NormalPath;

/// What a call does, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Creates billable work: the body is read and the job limits apply.
    Submit,
    /// The status of one job (recorded when it changes).
    Poll,
    /// Results, listings, devices, searches, metadata.
    Read,
    Cancel,
    /// IBM sessions (open, look up, close).
    Session,
    /// A credential exchange (IBM Cloud IAM).
    Auth,
}

/// An allowlisted call: its name (the record's `operation`), its class and,
/// for calls on one job, the job's id (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: &'static str,
    pub class: OpClass,
    pub job_id: Option<String>,
}

/// One row: method, segments (`{id}` is the job id, `*` any one segment),
/// the operation's name and class.
type Row = (&'static str, &'static [&'static str], &'static str, OpClass);

use OpClass::*;

pub const IBM_PREFIXES: &[&[&str]] = &[&["api", "v1"], &["runtime"], &["v1"], &[]];
pub const IBM: &[Row] = &[
    ("POST", &["jobs"], "submit", Submit),
    ("GET", &["jobs"], "list_jobs", Read),
    ("GET", &["jobs", "{id}"], "status", Poll),
    ("DELETE", &["jobs", "{id}"], "cancel", Cancel),
    ("POST", &["jobs", "{id}", "cancel"], "cancel", Cancel),
    ("GET", &["jobs", "{id}", "results"], "results", Read),
    ("GET", &["jobs", "{id}", "interim_results"], "results", Read),
    ("GET", &["jobs", "{id}", "metrics"], "job_metrics", Read),
    ("GET", &["jobs", "{id}", "logs"], "job_logs", Read),
    (
        "GET",
        &["jobs", "{id}", "transpiled_circuits"],
        "job_circuits",
        Read,
    ),
    ("PUT", &["jobs", "{id}", "tags"], "job_tags", Read),
    ("POST", &["sessions"], "session_create", Session),
    ("GET", &["sessions", "*"], "session_status", Session),
    ("PATCH", &["sessions", "*"], "session_update", Session),
    (
        "DELETE",
        &["sessions", "*", "close"],
        "session_close",
        Session,
    ),
    ("GET", &["backends"], "list_backends", Read),
    ("GET", &["backends", "*"], "backend", Read),
    ("GET", &["backends", "*", "configuration"], "backend", Read),
    ("GET", &["backends", "*", "properties"], "backend", Read),
    ("GET", &["backends", "*", "status"], "backend", Read),
    ("GET", &["backends", "*", "defaults"], "backend", Read),
    ("GET", &["usage"], "usage", Read),
    ("GET", &["instances"], "instances", Read),
    ("GET", &["instances", "*"], "instances", Read),
    (
        "GET",
        &["instances", "*", "configuration"],
        "instances",
        Read,
    ),
    ("GET", &["versions"], "versions", Read),
    ("GET", &["users", "me"], "user", Read),
    ("GET", &["accounts", "*"], "account", Read),
];

pub const IBM_IAM: &[Row] = &[("POST", &["identity", "token"], "iam_token", Auth)];

pub const BRAKET: &[Row] = &[
    ("POST", &["quantum-task"], "submit", Submit),
    ("GET", &["quantum-task", "{id}"], "status", Poll),
    ("PUT", &["quantum-task", "{id}", "cancel"], "cancel", Cancel),
    ("POST", &["quantum-tasks"], "search_tasks", Read),
    ("POST", &["job"], "hybrid_job_create", Submit),
    ("GET", &["job", "{id}"], "status", Poll),
    ("PUT", &["job", "{id}", "cancel"], "cancel", Cancel),
    ("POST", &["jobs"], "search_jobs", Read),
    ("GET", &["device", "*"], "device", Read),
    ("POST", &["devices"], "search_devices", Read),
    ("GET", &["tags", "*"], "tags", Read),
    ("POST", &["tags", "*"], "tags", Read),
    ("DELETE", &["tags", "*"], "tags", Read),
];

pub const IONQ_PREFIXES: &[&[&str]] = &[&["v0.3"], &["v0.4"]];
pub const IONQ: &[Row] = &[
    ("POST", &["jobs"], "submit", Submit),
    ("GET", &["jobs"], "list_jobs", Read),
    // before jobs/{id}: a literal segment, not a job
    ("GET", &["jobs", "estimate"], "estimate", Read),
    ("GET", &["jobs", "{id}"], "status", Poll),
    ("GET", &["jobs", "{id}", "results"], "results", Read),
    (
        "GET",
        &["jobs", "{id}", "results", "probabilities"],
        "results",
        Read,
    ),
    ("GET", &["jobs", "{id}", "cost"], "job_cost", Read),
    (
        "PUT",
        &["jobs", "{id}", "status", "cancel"],
        "cancel",
        Cancel,
    ),
    ("PUT", &["jobs", "status", "cancel"], "cancel_many", Cancel),
    ("DELETE", &["jobs", "{id}"], "cancel", Cancel),
    ("DELETE", &["jobs"], "delete_many", Cancel),
    ("POST", &["sessions"], "session_create", Session),
    ("GET", &["sessions"], "list_sessions", Read),
    ("GET", &["sessions", "*"], "session_status", Session),
    ("POST", &["sessions", "*", "end"], "session_close", Session),
    ("GET", &["backends"], "list_backends", Read),
    ("GET", &["backends", "*"], "backend", Read),
    (
        "GET",
        &["backends", "*", "characterizations"],
        "backend",
        Read,
    ),
    (
        "GET",
        &["backends", "*", "characterizations", "*"],
        "backend",
        Read,
    ),
    (
        "GET",
        &["characterizations", "backends", "*"],
        "backend",
        Read,
    ),
    (
        "GET",
        &["characterizations", "backends", "*", "current"],
        "backend",
        Read,
    ),
    ("GET", &["characterizations", "*"], "backend", Read),
    ("GET", &["whoami"], "whoami", Read),
];

/// A generic route's operations: `POST <submit_path>` submits, `GET
/// <submit_path>/<id>` polls; nothing else is allowlisted.
pub fn generic_operation(submit_path: &str, method: &str, path: &NormalPath) -> Option<Operation> {
    let submit = crate::path::normalise(submit_path).ok()?;
    let rest = path.strip_prefix(&submit)?;
    match (method, rest.segments.as_slice()) {
        ("POST", []) => Some(Operation {
            name: "submit",
            class: Submit,
            job_id: None,
        }),
        ("GET", [id]) => Some(Operation {
            name: "status",
            class: Poll,
            job_id: Some(id.clone()),
        }),
        _ => None,
    }
}

/// The first row of `rows` that `method` and `path` (after one of
/// `prefixes`) match exactly.
pub fn lookup(
    rows: &[Row],
    prefixes: &[&[&str]],
    method: &str,
    path: &NormalPath,
) -> Option<Operation> {
    let segments: Vec<&str> = path.parts().collect();
    for prefix in prefixes {
        let Some(rest) = segments.strip_prefix(*prefix) else {
            continue;
        };
        for (m, pattern, name, class) in rows {
            if *m != method || pattern.len() != rest.len() {
                continue;
            }
            let mut job_id = None;
            let fits = pattern.iter().zip(rest).all(|(p, s)| match *p {
                "{id}" => {
                    job_id = Some(s.to_string());
                    !s.is_empty()
                }
                "*" => !s.is_empty(),
                literal => literal == *s,
            });
            if fits {
                return Some(Operation {
                    name,
                    class: *class,
                    job_id,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalise;

    fn op(rows: &[Row], prefixes: &[&[&str]], method: &str, raw: &str) -> Option<Operation> {
        lookup(rows, prefixes, method, &normalise(raw).unwrap())
    }

    #[test]
    fn every_row_matches_its_own_example() {
        for (rows, prefixes) in [
            (IBM, IBM_PREFIXES),
            (BRAKET, &[&[][..]][..]),
            (IONQ, IONQ_PREFIXES),
            (IBM_IAM, &[&[][..]][..]),
        ] {
            for (method, pattern, name, class) in rows {
                let mut path: Vec<&str> = prefixes[0].to_vec();
                path.extend(pattern.iter().map(|p| {
                    if p.starts_with('{') || *p == "*" {
                        "x1"
                    } else {
                        p
                    }
                }));
                let raw = format!("/{}", path.join("/"));
                let found = op(rows, prefixes, method, &raw).unwrap_or_else(|| panic!("{raw}"));
                assert_eq!(found.class, *class, "{raw}");
                // an earlier row may share the shape under another name only if the class agrees
                let _ = name;
            }
        }
    }

    #[test]
    fn variants_of_a_submission_path_are_the_submission() {
        for raw in [
            "/quantum-task",
            "/quantum-task/",
            "//quantum-task",
            "/./quantum-task",
            "/x/../quantum-task",
            "/%71uantum-task",
        ] {
            let found = op(BRAKET, &[&[]], "POST", raw).unwrap_or_else(|| panic!("{raw}"));
            assert_eq!((found.name, found.class), ("submit", Submit), "{raw}");
        }
        let arn = "/quantum-task/arn%3Aaws%3Abraket%3Aus-east-1%3A1%3Aquantum-task%2Fabc";
        let poll = op(BRAKET, &[&[]], "GET", arn).unwrap();
        assert_eq!(poll.class, Poll);
        assert_eq!(
            poll.job_id.as_deref(),
            Some("arn:aws:braket:us-east-1:1:quantum-task/abc")
        );
        assert_eq!(
            op(BRAKET, &[&[]], "POST", "/job").unwrap().name,
            "hybrid_job_create"
        );
    }

    #[test]
    fn anything_else_is_not_allowlisted() {
        assert!(op(IBM, IBM_PREFIXES, "POST", "/api/v1/x/jobs").is_none());
        assert!(op(IBM, IBM_PREFIXES, "POST", "/api/v10/jobs").is_none());
        assert!(op(IBM, IBM_PREFIXES, "PUT", "/api/v1/jobs").is_none());
        assert!(op(BRAKET, &[&[]], "POST", "/quantum-task/extra/x").is_none());
        assert_eq!(
            op(IBM, IBM_PREFIXES, "POST", "/api/v1/jobs/d1/cancel")
                .unwrap()
                .class,
            Cancel
        );
        assert_eq!(
            op(IBM, IBM_PREFIXES, "POST", "/api/v1/sessions")
                .unwrap()
                .class,
            Session
        );
        assert_eq!(
            op(IONQ, IONQ_PREFIXES, "POST", "/v0.4/jobs").unwrap().class,
            Submit
        );
        assert!(op(IONQ, IONQ_PREFIXES, "POST", "/jobs").is_none());
        // a literal segment is not a job id
        assert_eq!(
            op(IONQ, IONQ_PREFIXES, "GET", "/v0.4/jobs/estimate")
                .unwrap()
                .class,
            Read
        );
        assert_eq!(
            op(IONQ, IONQ_PREFIXES, "GET", "/v0.4/jobs/j1")
                .unwrap()
                .class,
            Poll
        );
    }
}
