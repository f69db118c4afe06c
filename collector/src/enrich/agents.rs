//! Agent attribution: which exec'd processes start a desktop-agent session.
//!
//! An `[[agents]]` entry matches a process when every matcher it sets
//! matches (exe glob, comm, command-line regex, cgroup glob). The process
//! table then stamps the session on the process and all its descendants.

use globset::{Glob, GlobMatcher};
use regex::Regex;

use crate::config::AgentConfig;

/// What the matchers look at, taken from the process table.
pub struct Candidate<'a> {
    pub exe: &'a str,
    pub comm: &'a str,
    pub cmd_line: &'a str,
    pub cgroup: &'a str,
}

#[derive(Debug, Clone)]
struct AgentRule {
    name: String,
    exe: Option<GlobMatcher>,
    comm: Option<String>,
    cmdline: Option<Regex>,
    cgroup: Option<GlobMatcher>,
}

impl AgentRule {
    fn matches(&self, c: &Candidate<'_>) -> bool {
        self.exe.as_ref().is_none_or(|g| g.is_match(c.exe))
            && self.comm.as_ref().is_none_or(|n| n == c.comm)
            && self.cmdline.as_ref().is_none_or(|r| r.is_match(c.cmd_line))
            && self.cgroup.as_ref().is_none_or(|g| g.is_match(c.cgroup))
    }
}

#[derive(Debug, Clone, Default)]
pub struct AgentMatcher {
    rules: Vec<AgentRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agents[{index}]: {message}")]
    Invalid { index: usize, message: String },
}

impl AgentMatcher {
    pub fn new(agents: &[AgentConfig]) -> Result<Self, AgentError> {
        let glob = |index: usize, g: &Option<String>| -> Result<Option<GlobMatcher>, AgentError> {
            g.as_ref()
                .map(|g| {
                    Glob::new(g)
                        .map(|g| g.compile_matcher())
                        .map_err(|e| AgentError::Invalid {
                            index,
                            message: e.to_string(),
                        })
                })
                .transpose()
        };
        let mut rules = Vec::new();
        for (index, a) in agents.iter().enumerate() {
            rules.push(AgentRule {
                name: a.name.clone(),
                exe: glob(index, &a.exe)?,
                comm: a.comm.clone(),
                cmdline: a
                    .cmdline
                    .as_ref()
                    .map(|r| Regex::new(r))
                    .transpose()
                    .map_err(|e| AgentError::Invalid {
                        index,
                        message: e.to_string(),
                    })?,
                cgroup: glob(index, &a.cgroup)?,
            });
        }
        Ok(Self { rules })
    }

    /// Name of the first agent whose matchers all match, if any.
    pub fn match_agent(&self, c: &Candidate<'_>) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.matches(c))
            .map(|r| r.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, exe: Option<&str>, cmdline: Option<&str>) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            exe: exe.map(Into::into),
            comm: None,
            cmdline: cmdline.map(Into::into),
            cgroup: None,
        }
    }

    #[test]
    fn all_given_matchers_must_match() {
        let m = AgentMatcher::new(&[agent("cowork", Some("/opt/cowork/*"), Some("--agent-mode"))])
            .unwrap();
        let c = |exe, cmd| Candidate {
            exe,
            comm: "x",
            cmd_line: cmd,
            cgroup: "/",
        };
        assert_eq!(
            m.match_agent(&c("/opt/cowork/bin", "bin --agent-mode")),
            Some("cowork")
        );
        assert_eq!(m.match_agent(&c("/opt/cowork/bin", "bin")), None);
        assert_eq!(m.match_agent(&c("/usr/bin/python3", "--agent-mode")), None);
    }
}
