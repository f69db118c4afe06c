//! `vigil-detector --config FILE`: the detector's TOML configuration.
//!
//! Unknown keys are refused with their name and line (serde + toml);
//! [`DetectorConfig::validate`] then reports every semantic problem at once,
//! each with the key it is about. Relative paths are taken from the config
//! file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil_schema::EventKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Alerts (`alerts/`), positions (`state/`), dead letters (`deadletter/`).
    pub data_dir: PathBuf,
    /// The directory of rule files (`*.yaml`).
    pub rules: PathBuf,
    #[serde(default)]
    pub window: WindowConfig,
    pub source: SourceConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// How much event time the window holds (rules look back at most this far).
    #[serde(default = "default_span")]
    pub span_secs: u64,
    /// How late an event may arrive and still be evaluated.
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    /// Bound on the window's memory; beyond it the oldest batches leave early (counted).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rules run at most this often (and whenever the source goes idle with new data).
    #[serde(default = "default_eval")]
    pub eval_interval_ms: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            span_secs: default_span(),
            grace_secs: default_grace(),
            max_bytes: default_max_bytes(),
            eval_interval_ms: default_eval(),
        }
    }
}

fn default_span() -> u64 {
    900
}
fn default_grace() -> u64 {
    30
}
fn default_max_bytes() -> u64 {
    2 << 30
}
fn default_eval() -> u64 {
    500
}

/// Exactly one of `spool` and `[source.kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The collector's spool directory on this host (its `<data_dir>/spool`).
    pub spool: Option<PathBuf>,
    pub kafka: Option<KafkaSourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Event topics; default `vigil.events.<kind>` for every kind.
    #[serde(default = "default_topics")]
    pub topics: Vec<String>,
    #[serde(default = "default_dead_letter")]
    pub dead_letter_topic: String,
    /// Partitions of topics the detector creates when they are missing.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Any librdkafka property (security.protocol, sasl.*, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_group() -> String {
    "vigil-detector".into()
}
fn default_topics() -> Vec<String> {
    EventKind::ALL
        .iter()
        .map(|k| format!("vigil.events.{}", k.as_str()))
        .collect()
}
fn default_dead_letter() -> String {
    "vigil.deadletter".into()
}
fn default_partitions() -> i32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The topic alerts are published to when a broker is configured.
    #[serde(default = "default_alert_topic")]
    pub topic: String,
    /// Publish alerts to these brokers; default: the Kafka source's, if any.
    pub brokers: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            topic: default_alert_topic(),
            brokers: None,
        }
    }
}

fn default_alert_topic() -> String {
    "vigil.alerts".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus `/metrics`; loopback by default. Empty: no listener.
    #[serde(default = "default_metrics")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics(),
        }
    }
}

fn default_metrics() -> String {
    "127.0.0.1:9465".into()
}

impl DetectorConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<DetectorConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: DetectorConfig = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(format!(
                "{}: {} problem(s):\n  {}",
                path.display(),
                errors.len(),
                errors.join("\n  ")
            ));
        }
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.data_dir);
        abs(&mut self.rules);
        if let Some(s) = &mut self.source.spool {
            abs(s);
        }
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        match (&self.source.spool, &self.source.kafka) {
            (Some(_), Some(_)) => {
                e.push("source: set either spool or [source.kafka], not both".into())
            }
            (None, None) => e.push(
                "source: set spool = \"DIR\" or [source.kafka] brokers = \"host:port\"".into(),
            ),
            _ => {}
        }
        if let Some(k) = &self.source.kafka {
            if k.brokers.trim().is_empty() {
                e.push("source.kafka.brokers: empty".into());
            }
            if k.topics.is_empty() {
                e.push("source.kafka.topics: empty".into());
            }
            if k.partitions < 1 {
                e.push("source.kafka.partitions: must be at least 1".into());
            }
        }
        if !self.rules.is_dir() {
            e.push(format!(
                "rules: {} is not a directory",
                self.rules.display()
            ));
        }
        let w = &self.window;
        if w.span_secs == 0 {
            e.push("window.span_secs: must be more than 0".into());
        }
        if w.eval_interval_ms == 0 {
            e.push("window.eval_interval_ms: must be more than 0".into());
        }
        if w.max_bytes < 1 << 20 {
            e.push("window.max_bytes: must be at least 1048576 (1 MiB)".into());
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            e.push(format!(
                "metrics.listen: {:?} is not an address:port",
                self.metrics.listen
            ));
        }
        if self.alerts.topic.is_empty() {
            e.push("alerts.topic: empty".into());
        }
        e
    }

    /// The brokers alerts are published to, if any.
    pub fn alert_brokers(&self) -> Option<&str> {
        self.alerts
            .brokers
            .as_deref()
            .or(self.source.kafka.as_ref().map(|k| k.brokers.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<DetectorConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        let p = dir.path().join("d.toml");
        std::fs::write(&p, text).unwrap();
        DetectorConfig::load(&p)
    }

    #[test]
    fn spool_default_and_relative_paths() {
        let c = load("data_dir = \"d\"\nrules = \"rules\"\n[source]\nspool = \"/s\"\n").unwrap();
        assert!(c.data_dir.is_absolute());
        assert_eq!(c.window.span_secs, 900);
        assert_eq!(c.alert_brokers(), None);
    }

    #[test]
    fn errors_name_keys() {
        let e = load("data_dir = \"d\"\nrules = \"rules\"\n[source]\nspol = \"/s\"\n").unwrap_err();
        assert!(
            e.contains("unknown field `spol`") && e.contains("line 4"),
            "{e}"
        );
        let e = load(
            "data_dir = \"d\"\nrules = \"nope\"\n[window]\nspan_secs = 0\n[source]\n[metrics]\nlisten = \"x\"\n",
        )
        .unwrap_err();
        for want in [
            "source: set spool",
            "rules:",
            "window.span_secs",
            "metrics.listen",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }
}
