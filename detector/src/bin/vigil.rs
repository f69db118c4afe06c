//! `vigil`: the analysts' command line.
//!
//! - `vigil rules check DIR`: validate every rule (YAML shape, SQL parse and
//!   plan against the event schemas); each problem as `file:line: problem`.
//! - `vigil rules test DIR`: run every rule's embedded examples.
//! - `vigil alerts --data-dir DIR [--json]`: the stored alerts.
//!
//! Exit codes: 0 success, 1 a check or test failed, 2 an error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_detector::alerts::{latest, store};
use vigil_detector::rules::check::{check_dir, run_examples};
use vigil_detector::rules::engine::Engine;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil's analyst CLI: rules and alerts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check or test detection rules.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// List stored alerts (the latest version of each), oldest first.
    Alerts {
        /// The detector's data directory (or its alerts directory).
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this rule's alerts.
        #[arg(long)]
        rule: Option<String>,
        /// Run a SQL query instead (DataFusion): table `alerts` holds the
        /// latest version of each alert, `alert_versions` every stored row.
        #[arg(long, conflicts_with = "rule")]
        sql: Option<String>,
    },
}

#[derive(Subcommand)]
enum RulesAction {
    /// Validate every rule file in DIR.
    Check { dir: PathBuf },
    /// Run every rule's examples in DIR.
    Test { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rules {
            action: RulesAction::Check { dir },
        } => rules_check(&dir),
        Command::Rules {
            action: RulesAction::Test { dir },
        } => rules_test(&dir),
        Command::Alerts {
            data_dir,
            json,
            sql: Some(sql),
            ..
        } => alerts_sql(&data_dir, &sql, json),
        Command::Alerts {
            data_dir,
            json,
            rule,
            ..
        } => alerts(&data_dir, json, rule.as_deref()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("vigil: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn rules_check(dir: &std::path::Path) -> anyhow::Result<bool> {
    let engine = Engine::new();
    let checked = check_dir(&engine, dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for e in &checked.errors {
        println!("{e}");
    }
    if checked.errors.is_empty() {
        println!("{} rules OK", checked.rules.len());
        Ok(true)
    } else {
        println!(
            "{} rules OK, {} problem(s)",
            checked.rules.len(),
            checked.errors.len()
        );
        Ok(false)
    }
}

fn rules_test(dir: &std::path::Path) -> anyhow::Result<bool> {
    let engine = Engine::new();
    let checked = check_dir(&engine, dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for e in &checked.errors {
        println!("{e}");
    }
    let (mut passed, mut failed) = (0, 0);
    for rule in &checked.rules {
        for o in run_examples(&engine, rule) {
            let verdict = if o.passed() { "ok  " } else { "FAIL" };
            let want = if o.expected_fire { "fires" } else { "quiet" };
            let detail = match &o.error {
                Some(e) => format!(": {e}"),
                None => format!(" ({} finding(s))", o.fired),
            };
            println!("{verdict} {} / {} [{want}]{detail}", rule.id, o.name);
            if o.passed() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!(
        "{passed} examples passed, {failed} failed, {} rule file(s) with problems",
        checked.errors.len()
    );
    Ok(failed == 0 && checked.errors.is_empty())
}

fn alerts(data_dir: &std::path::Path, json: bool, rule: Option<&str>) -> anyhow::Result<bool> {
    use std::io::Write;
    let (versions, unreadable) = store::read_all(data_dir)?;
    for e in &unreadable {
        eprintln!("vigil: skipping {e}");
    }
    let mut out = std::io::stdout().lock();
    let alerts: Vec<_> = latest(versions)
        .into_iter()
        .filter(|a| rule.is_none_or(|r| a.rule_id == r))
        .collect();
    if json {
        for a in &alerts {
            writeln!(out, "{}", serde_json::to_string(a)?)?;
        }
        return Ok(true);
    }
    writeln!(
        out,
        "{:<24} {:<8} {:<28} {:<16} {:<14} {:>5}  SUMMARY",
        "TIME (UTC)", "SEVERITY", "RULE", "HOST", "AGENT", "COUNT"
    )?;
    for a in &alerts {
        writeln!(
            out,
            "{:<24} {:<8} {:<28} {:<16} {:<14} {:>5}  {}",
            format_time(a.time),
            a.severity,
            a.rule_id,
            a.host_id.chars().take(16).collect::<String>(),
            a.agent_id.as_deref().unwrap_or("-"),
            a.count,
            a.summary
        )?;
    }
    writeln!(out, "{} alert(s)", alerts.len())?;
    Ok(true)
}

/// `vigil alerts --sql`: the Parquet store as tables, the query's result as
/// a table (or JSON lines).
fn alerts_sql(data_dir: &std::path::Path, sql: &str, json: bool) -> anyhow::Result<bool> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let dir = if data_dir.join("alerts").is_dir() {
        data_dir.join("alerts")
    } else {
        data_dir.to_path_buf()
    };
    anyhow::ensure!(dir.is_dir(), "{}: no alert store here", dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctx = SessionContext::new();
        let options = ParquetReadOptions::default()
            .file_extension(".parquet")
            .table_partition_cols(vec![("day".to_string(), DataType::Utf8)]);
        ctx.register_parquet("alert_versions", dir.to_string_lossy().as_ref(), options)
            .await?;
        ctx.sql(
            "CREATE VIEW alerts AS SELECT * EXCEPT (version_rank) FROM (SELECT *, row_number() OVER \
             (PARTITION BY id ORDER BY count DESC, detected_at DESC) AS version_rank FROM alert_versions) \
             WHERE version_rank = 1",
        )
        .await?;
        let batches = ctx.sql(sql).await?.collect().await?;
        if json {
            let mut out = std::io::stdout().lock();
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        } else {
            println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&batches)?);
        }
        anyhow::Ok(true)
    })
}

fn format_time(ms: i64) -> String {
    let secs = ms.rem_euclid(86_400_000) / 1000;
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        store::day_of(ms),
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms.rem_euclid(1000)
    )
}
