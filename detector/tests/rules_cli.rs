//! `vigil rules check` and `vigil rules test`, run as an analyst runs them.

use std::path::Path;
use std::process::Command;

fn vigil(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run vigil");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_names_file_line_and_problem_of_every_broken_rule() {
    let (code, out) = vigil(&["rules", "check", "detector/tests/broken-rules"]);
    assert_eq!(code, 1, "{out}");
    let d = "detector/tests/broken-rules";
    for want in [
        format!("{d}/01_yaml_syntax.yaml:9: could not find expected ':'"),
        format!("{d}/02_bad_severity.yaml:4: severity: unknown variant `urgent`"),
        format!("{d}/03_sql_syntax.yaml:9: query: SQL error: ParserError(\"Expected: an expression, found: = at Line: 3, Column: 19\")"),
        format!("{d}/04_unknown_column.yaml:8: query: Schema error: No field named file_name."),
        format!("{d}/05_missing_output.yaml:6: query: the query's output lacks summary"),
        format!("{d}/06_unknown_param.yaml:10: query uses ${{limt}}, which is neither in params (limit)"),
        format!("{d}/07_no_examples.yaml:1: no examples"),
        format!("{d}/09_duplicate_id.yaml:1: id \"broken.severity\" is already used by {d}/08_duplicate_id.yaml"),
        format!("{d}/10_unknown_table.yaml:6: query: Error during planning: table 'datafusion.public.files' not found"),
        format!("{d}/12_keep_unknown_table.yaml:6: keep: \"files\" is not a table"),
        format!("{d}/13_keep_unknown_column.yaml:7: keep.file: Schema error: No field named agent."),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&want)), "missing {want:?} in:\n{out}");
    }
    // the good rules among them still load
    assert!(out.contains("2 rules OK, 11 problem(s)"), "{out}");
    assert!(!out.contains("Valid fields are"), "{out}");
}

#[test]
fn builtin_rules_check_and_their_examples_pass() {
    let (code, out) = vigil(&["rules", "check", "rules"]);
    assert_eq!(code, 0, "{out}");
    let n: usize = out
        .lines()
        .last()
        .and_then(|l| l.strip_suffix(" rules OK"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(n >= 15, "{n} built-in rules");
    let (code, out) = vigil(&["rules", "test", "rules"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(" failed, 0 rule file(s) with problems") && out.contains(" 0 failed"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn a_failing_example_fails_the_test_command() {
    let dir = tempfile::tempdir().unwrap();
    let rule = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/network_agent_listen.yaml"),
    )
    .unwrap()
    .replacen("fires: false", "fires: true", 1);
    std::fs::write(dir.path().join("r.yaml"), rule).unwrap();
    let (code, out) = vigil(&["rules", "test", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL network.agent_listen / a listener outside any agent [fires] (0 finding(s))"
        ),
        "{out}"
    );
}

#[test]
fn alerts_lists_the_latest_version_of_each_alert_and_answers_sql() {
    use vigil_detector::alerts::store::AlertStore;
    use vigil_detector::alerts::Alert;
    let dir = tempfile::tempdir().unwrap();
    let alert = |id: &str, count: u64, detected_at: i64| Alert {
        id: id.into(),
        time: 1_767_225_600_000,
        last_time: 1_767_225_600_000,
        detected_at,
        rule_id: "cred.store_read".into(),
        rule_title: "t".into(),
        severity: "high".into(),
        host_id: "h".into(),
        agent_id: Some("a".into()),
        agent_session: None,
        group_key: "h/a".into(),
        window_start: 1_767_225_600_000,
        summary: format!("summary of {id}"),
        attack: vec!["T1552.001".into()],
        tags: vec![],
        count,
        evidence: "{}".into(),
        event_refs: vec![],
        merged_ids: vec![],
    };
    let mut store = AlertStore::open(dir.path()).unwrap();
    store
        .write(&[alert("one", 1, 1), alert("two", 1, 1)], 1)
        .unwrap();
    store.write(&[alert("one", 4, 2)], 2).unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, out) = vigil(&["alerts", "--data-dir", data, "--json"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows.iter().find(|r| r["id"] == "one").unwrap()["count"], 4);
    let (code, out) = vigil(&["alerts", "--data-dir", data]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2026-01-01T00:00:00.000Z high") && out.contains("2 alert(s)"),
        "{out}"
    );
    let (code, out) = vigil(&[
        "alerts",
        "--data-dir",
        data,
        "--json",
        "--sql",
        "SELECT id, count, day FROM alerts ORDER BY id",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            r#"{"id":"one","count":4,"day":"2026-01-01"}"#,
            r#"{"id":"two","count":1,"day":"2026-01-01"}"#
        ]
    );
    let (code, out) = vigil(&["alerts", "--data-dir", data, "--sql", "SELEC 1"]);
    assert_eq!(code, 2);
    assert!(out.contains("Expected: an SQL statement"), "{out}");
}
