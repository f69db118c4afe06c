//! Per-agent gateway tokens: each agent's SDK is given its own token as its
//! placeholder credential. A token is honoured only from a process in that
//! agent's tree, as the collector attributes the caller: a token copied to
//! another agent or to a user's shell is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

/// Who a caller is, from its token and the collector's attribution.
#[derive(Debug, PartialEq)]
pub enum Identity {
    /// The token of the agent whose tree the caller is in.
    Agent,
    /// A valid token from a process outside its agent's tree: why.
    Mismatch(String),
    /// No token of any agent: why (the `unattributed` policy applies).
    Untokened(String),
}

pub struct Tokens {
    /// (agent, token)
    tokens: Vec<(String, String)>,
}

/// Agent names only: a token must never reach a log.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(agent, _)| agent))
            .finish()
    }
}

impl Tokens {
    /// Read each agent's token file; refuse a file others could read, an
    /// empty one, and two agents sharing a token.
    pub fn load(files: &BTreeMap<String, PathBuf>) -> anyhow::Result<Tokens> {
        use std::os::unix::fs::PermissionsExt;
        let mut tokens: Vec<(String, String)> = Vec::new();
        for (agent, file) in files {
            let meta = std::fs::metadata(file)
                .with_context(|| format!("tokens.{agent}: cannot read {}", file.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "tokens.{agent}: {} is readable by group or others (mode {mode:03o}): chmod 600 it",
                    file.display()
                );
            }
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("tokens.{agent}: cannot read {}", file.display()))?
                .trim()
                .to_string();
            if token.len() < 16 {
                bail!(
                    "tokens.{agent}: the token in {} is shorter than 16 characters",
                    file.display()
                );
            }
            if let Some((other, _)) = tokens.iter().find(|(_, t)| same(t, &token)) {
                bail!("tokens.{agent}: same token as agent {other}");
            }
            tokens.push((agent.clone(), token));
        }
        Ok(Tokens { tokens })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Who the caller is: `presented` is what its request carried in the
    /// credential's place, `caller_agent` the agent of its process tree.
    pub fn identify(&self, presented: Option<&str>, caller_agent: Option<&str>) -> Identity {
        let Some(presented) = presented.filter(|p| !p.is_empty()) else {
            return Identity::Untokened("no gateway token presented".into());
        };
        // every token is compared, so the time taken does not tell which matched
        let owner = self
            .tokens
            .iter()
            .filter(|(_, t)| same(t, presented))
            .map(|(a, _)| a.as_str())
            .next_back();
        let Some(owner) = owner else {
            return Identity::Untokened("the credential presented is not a gateway token".into());
        };
        if caller_agent == Some(owner) {
            return Identity::Agent;
        }
        let who = match caller_agent {
            Some(other) => format!("a process of agent {other}"),
            None => "a process outside every agent's tree (or one the collector could not place)"
                .to_string(),
        };
        Identity::Mismatch(format!(
            "the gateway token of agent {owner} was presented by {who}"
        ))
    }
}

/// Constant-time equality (for equal lengths; lengths are not secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tokens(dir: &std::path::Path, entries: &[(&str, &str, u32)]) -> anyhow::Result<Tokens> {
        let mut files = BTreeMap::new();
        for (agent, token, mode) in entries {
            let path = dir.join(agent);
            std::fs::write(&path, format!("{token}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
            files.insert(agent.to_string(), path);
        }
        Tokens::load(&files)
    }

    #[test]
    fn a_token_is_honoured_only_from_its_agents_tree() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(
            dir.path(),
            &[
                ("alpha", "alpha-token-0123456789", 0o600),
                ("beta", "beta-token-0123456789", 0o600),
            ],
        )
        .unwrap();
        assert_eq!(
            t.identify(Some("alpha-token-0123456789"), Some("alpha")),
            Identity::Agent
        );
        let Identity::Mismatch(why) = t.identify(Some("alpha-token-0123456789"), Some("beta"))
        else {
            panic!("another agent's token accepted");
        };
        assert!(
            why.contains("agent alpha") && why.contains("agent beta"),
            "{why}"
        );
        assert!(
            !why.contains("alpha-token"),
            "the token itself is never told: {why}"
        );
        assert!(matches!(
            t.identify(Some("alpha-token-0123456789"), None),
            Identity::Mismatch(_)
        ));
        assert!(matches!(
            t.identify(None, Some("alpha")),
            Identity::Untokened(_)
        ));
        assert!(matches!(
            t.identify(Some("real-looking-provider-key"), Some("alpha")),
            Identity::Untokened(_)
        ));
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let e = tokens(dir.path(), &[("a", "long-enough-token-1", 0o644)]).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let e = tokens(dir.path(), &[("b", "short", 0o600)]).unwrap_err();
        assert!(e.to_string().contains("shorter than 16"), "{e}");
        let e = tokens(
            dir.path(),
            &[
                ("c", "same-token-twice-000", 0o600),
                ("d", "same-token-twice-000", 0o600),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("same token"), "{e}");
    }
}
