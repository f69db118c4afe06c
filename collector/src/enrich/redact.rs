//! Redaction of secrets in command lines before an event leaves the host.
//!
//! Two mechanisms, both applied to every argument:
//! - patterns: a regex matching a secret inside one argument
//!   (`--token=abc`, `Authorization: Bearer abc`, `AKIA…`, a 128-hex IBM
//!   Quantum token). A named group `secret` limits the replacement to that
//!   group; otherwise the whole match is replaced.
//! - flags: an option whose *next* argument is the secret (`--api-key abc`).

use regex::Regex;

pub const MASK: &str = "[REDACTED]";

/// Built-in secret patterns; the config adds to these.
const BUILTIN_PATTERNS: &[&str] = &[
    // --token=…, --api-key=…, password:…, AWS_SECRET_ACCESS_KEY=…
    r"(?i)(?:^|[-_])(?:token|api[-_]?key|apikey|secret|secret[-_]?key|access[-_]?key|password|passwd|pwd|auth|credentials?|client[-_]?secret|private[-_]?key)[=:](?P<secret>.+)",
    // Authorization headers: Bearer/Basic/Token schemes
    r"(?i)authorization:\s*(?:bearer|basic|token|apikey)\s+(?P<secret>\S+)",
    // Any header or env-style assignment whose name says it holds a secret
    r"(?i)\b[a-z0-9_-]*(?:token|secret|api[-_]?key|password)[a-z0-9_-]*\s*[:=]\s*(?P<secret>\S+)",
    // AWS access key ids
    r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b",
    // IBM Quantum API tokens (128 hex digits)
    r"\b[0-9a-fA-F]{128}\b",
    // JSON Web Tokens
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    // credentials in URLs: scheme://user:password@host
    r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:(?P<secret>[^/\s@]+)@",
];

/// Options whose following argument is a secret; the config adds to these.
const BUILTIN_FLAGS: &[&str] = &[
    "--token",
    "--api-key",
    "--apikey",
    "--api_key",
    "--password",
    "--passwd",
    "--secret",
    "--client-secret",
    "--access-key",
    "--secret-key",
    "--aws-secret-access-key",
    "--auth-token",
    "--ibm-token",
    "--qiskit-token",
];

#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<Regex>,
    flags: Vec<String>,
}

impl Redactor {
    /// Built-ins plus the configured extras. The extras were validated with the config.
    pub fn new(extra_patterns: &[String], extra_flags: &[String]) -> Result<Self, regex::Error> {
        let mut patterns = Vec::new();
        for p in BUILTIN_PATTERNS
            .iter()
            .copied()
            .chain(extra_patterns.iter().map(String::as_str))
        {
            patterns.push(Regex::new(p)?);
        }
        let flags = BUILTIN_FLAGS
            .iter()
            .map(|s| s.to_string())
            .chain(extra_flags.iter().cloned())
            .collect();
        Ok(Self { patterns, flags })
    }

    /// Redact an argv in place; returns true if anything was masked.
    pub fn redact_args(&self, args: &mut [String]) -> bool {
        let mut changed = false;
        let mut next_is_secret = false;
        for arg in args.iter_mut() {
            if next_is_secret {
                next_is_secret = false;
                if arg != MASK {
                    *arg = MASK.to_string();
                    changed = true;
                }
                continue;
            }
            if self.flags.iter().any(|f| f == arg) {
                next_is_secret = true;
                continue;
            }
            if let Some(masked) = self.redact_str(arg) {
                *arg = masked;
                changed = true;
            }
        }
        changed
    }

    /// Redact one string; None when nothing matched.
    pub fn redact_str(&self, s: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for re in &self.patterns {
            let current = out.as_deref().unwrap_or(s);
            if !re.is_match(current) {
                continue;
            }
            let replaced = re
                .replace_all(current, |caps: &regex::Captures<'_>| {
                    let whole = caps.get(0).expect("group 0 always matches");
                    match caps.name("secret") {
                        Some(secret) => {
                            let start = secret.start() - whole.start();
                            let end = secret.end() - whole.start();
                            let text = whole.as_str();
                            format!("{}{MASK}{}", &text[..start], &text[end..])
                        }
                        None => MASK.to_string(),
                    }
                })
                .into_owned();
            if replaced != current {
                out = Some(replaced);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(args: &[&str]) -> Vec<String> {
        let r = Redactor::new(&[], &[]).unwrap();
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        r.redact_args(&mut v);
        v
    }

    #[test]
    fn masks_inline_and_following_values() {
        assert_eq!(
            redact(&["agent", "--token=s3cr3t"]),
            ["agent", "--token=[REDACTED]"]
        );
        assert_eq!(
            redact(&["agent", "--api-key", "s3cr3t", "x"]),
            ["agent", "--api-key", MASK, "x"]
        );
        assert_eq!(
            redact(&["curl", "-H", "Authorization: Bearer abc.def"]),
            ["curl", "-H", "Authorization: Bearer [REDACTED]"]
        );
    }

    #[test]
    fn masks_cloud_keys() {
        let ibm = "a".repeat(64) + &"0".repeat(64);
        let out = redact(&["python", "run.py", &ibm, "AKIAIOSFODNN7EXAMPLE"]);
        assert_eq!(out, ["python", "run.py", MASK, MASK]);
        assert_eq!(
            redact(&["env", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG"]),
            ["env", "AWS_SECRET_ACCESS_KEY=[REDACTED]"]
        );
        assert_eq!(
            redact(&["git", "clone", "https://bob:hunter2@example.com/r.git"]),
            ["git", "clone", "https://bob:[REDACTED]@example.com/r.git"]
        );
    }

    #[test]
    fn leaves_ordinary_arguments_alone() {
        assert_eq!(
            redact(&["ls", "-la", "/tmp", "--color=auto"]),
            ["ls", "-la", "/tmp", "--color=auto"]
        );
    }

    #[test]
    fn configured_pattern_with_and_without_group() {
        let r = Redactor::new(
            &[r"corp-[0-9]{6}".into(), r"pin=(?P<secret>\d+)".into()],
            &["--pin".into()],
        )
        .unwrap();
        let mut v = vec![
            "x".to_string(),
            "corp-123456".into(),
            "pin=42".into(),
            "--pin".into(),
            "7".into(),
        ];
        assert!(r.redact_args(&mut v));
        assert_eq!(v, ["x", MASK, "pin=[REDACTED]", "--pin", MASK]);
    }
}
