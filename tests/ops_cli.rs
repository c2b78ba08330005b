//! Operator interfaces of the real binary: `--metrics` (checked against the
//! exposition format), `--log-format json`, shell completions, the man page,
//! and the JSON report against its documented schema (docs/report-schema.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_registry-gc")
}

fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("REGISTRY_GC_LOG")
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("registry-gc-tests-cache"),
        )
        .output()
        .expect("run registry-gc")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A writable copy of the sample registry (a tree the real registry wrote).
fn sample_copy() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ops-cli-")
        .tempdir()
        .unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-registry");
    copy_dir(&src, dir.path());
    // an hour old, so that `--min-age 0s` (whose fence keeps a second of margin)
    // sees nothing as written during the run
    age(
        dir.path(),
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    dir
}

fn age(p: &Path, t: std::time::SystemTime) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            age(&e.unwrap().path(), t);
        }
    }
    let ft = filetime::FileTime::from_system_time(t);
    filetime::set_file_times(p, ft, ft).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

// ---------------------------------------------------------------- metrics

/// One sample of a textfile: family name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Checks the Prometheus text exposition format (0.0.4) strictly enough to catch
/// what node_exporter's textfile collector refuses: metric and label names,
/// label value escapes, a TYPE before a family's first sample, families in one
/// block, no repeated series, numeric values, a final newline.
fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
    fn is_name(s: &str, colon: bool) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    if !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            if !is_name(name, true) {
                return Err(err("bad metric name"));
            }
            match kw {
                "HELP" if arg.is_empty() => return Err(err("empty HELP")),
                "HELP" if !helped.insert(name.to_string()) => return Err(err("second HELP")),
                "HELP" => {}
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(err("bad TYPE"));
                    }
                    if typed.insert(name.to_string(), arg.to_string()).is_some() {
                        return Err(err("second TYPE"));
                    }
                }
                _ => return Err(err("unknown comment keyword")),
            }
            continue;
        }
        if line.is_empty() {
            return Err(err("empty line"));
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(err("no value")),
        };
        if !is_name(name, true) {
            return Err(err("bad metric name"));
        }
        if !typed.contains_key(name) {
            return Err(err("sample before its TYPE"));
        }
        if current.as_deref() != Some(name) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            if finished.contains(name) {
                return Err(err("family split in two blocks"));
            }
            current = Some(name.to_string());
        }
        let mut labels = BTreeMap::new();
        let value_part = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .ok_or_else(|| err("unterminated labels"))?;
                if body[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = body[start..]
                    .find('=')
                    .ok_or_else(|| err("label without ="))?
                    + start;
                let lname = &body[start..eq];
                if !is_name(lname, false) || lname.starts_with("__") {
                    return Err(err("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return Err(err("bad escape in label value")),
                        },
                        Some('"') => break,
                        Some('\n') | None => return Err(err("unterminated label value")),
                        Some(c) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("repeated label"));
                }
                match chars.peek().map(|(_, c)| *c) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => return Err(err("expected , or } after a label")),
                }
            }
            &body[end..]
        } else {
            rest
        };
        let value_str = value_part
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value"))?;
        let value = match value_str {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|_| err("value is not a number (or has a timestamp)"))?,
        };
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(err("repeated series"));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name} {label:?}: {found:?}");
    found[0]
}

#[test]
fn the_exposition_checker_refuses_what_the_collector_refuses() {
    let ok = "# HELP a A.\n# TYPE a gauge\na{x=\"1\",y=\"q\\\"\\\\\\n\"} 1.5\na{x=\"2\"} 2\n";
    assert_eq!(check_exposition(ok).unwrap().len(), 2);
    for bad in [
        "a 1\n",                                                    // no TYPE
        "# TYPE a gauge\na 1",                                      // no final newline
        "# TYPE a gauge\na 1\na 2\n",                               // repeated series
        "# TYPE a gauge\na{x=1} 1\n",                               // unquoted
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",                         // bad escape
        "# TYPE a gauge\na one\n",                                  // not a number
        "# TYPE 1a gauge\n1a 1\n",                                  // bad name
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n", // split family
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",                    // second TYPE
        "# TYPE a gauge\n\na 1\n",                                  // empty line
    ] {
        assert!(check_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// An age too long for any clock (an operator writing "never") keeps
/// everything young: nothing is deleted, not everything (a wrapped conversion
/// made it negative, every object old). Likewise for purge's `--older-than`.
#[test]
fn an_age_past_any_clock_protects_everything() {
    let reg = sample_copy();
    let root = reg.path().display().to_string();
    for age in ["1000000000y", "100y"] {
        let out = run(&["gc", "-m", "--min-age", age, "--upload-max-age", age, &root]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("nothing to delete"),
            "--min-age {age}: {}",
            text(&out.stdout)
        );
    }
    let out = run(&[
        "gc",
        "-m",
        "--dry-run",
        "--min-age",
        "0s",
        "--upload-max-age",
        "0s",
        &root,
    ]);
    assert!(
        !text(&out.stdout).contains("nothing to delete"),
        "the sample has garbage: {}",
        text(&out.stdout)
    );
}

#[test]
fn metrics_textfile_of_a_real_run_matches_its_report() {
    let reg = sample_copy();
    let out_dir = tempfile::tempdir().unwrap();
    let prom = out_dir.path().join("registry_gc.prom");
    let report = out_dir.path().join("report.json");
    let root = reg.path().display().to_string();
    let out = run(&[
        "-q",
        "gc",
        "-m",
        "--min-age",
        "0s",
        "--metrics",
        prom.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        &root,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = std::fs::read_to_string(&prom).unwrap();
    let samples = check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();

    assert!(
        samples
            .iter()
            .all(|(_, l, _)| l["storage"] == root && l["dry_run"] == "false"),
        "every series is labelled"
    );
    assert_eq!(value(&samples, "registry_gc_last_run_success", None), 1.0);
    assert_eq!(value(&samples, "registry_gc_last_run_exit_code", None), 0.0);
    assert_eq!(
        value(&samples, "registry_gc_last_run_deleted_keys", None),
        r["deleted_keys"].as_f64().unwrap()
    );
    assert!(
        r["deleted_keys"].as_u64().unwrap() > 0,
        "the run deleted something"
    );
    assert_eq!(
        value(&samples, "registry_gc_last_run_bytes_freed", None),
        r["bytes_freed"].as_f64().unwrap()
    );
    for (reason, c) in r["planned"].as_object().unwrap() {
        assert_eq!(
            value(
                &samples,
                "registry_gc_last_run_planned_keys",
                Some(("reason", reason))
            ),
            c["count"].as_f64().unwrap(),
            "{reason}"
        );
        assert_eq!(
            value(
                &samples,
                "registry_gc_last_run_planned_bytes",
                Some(("reason", reason))
            ),
            c["bytes"].as_f64().unwrap(),
            "{reason}"
        );
    }
    for class in ["list", "get", "head", "put", "delete"] {
        assert_eq!(
            value(
                &samples,
                "registry_gc_last_run_requests",
                Some(("class", class))
            ),
            r["requests"][class].as_f64().unwrap()
        );
    }
    for (metric, field) in [
        ("blobs", "blobs"),
        ("manifests", "manifests"),
        ("tags", "tags"),
        ("repositories", "repositories"),
        ("keys", "keys"),
    ] {
        assert_eq!(
            value(&samples, &format!("registry_gc_{metric}"), None),
            r["seen"][field].as_f64().unwrap(),
            "{metric}"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - value(&samples, "registry_gc_last_run_timestamp_seconds", None)).abs() < 300.0);
    let names: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
}

#[test]
fn metrics_are_written_when_the_run_fails() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("m.prom");
    let p = prom.to_str().unwrap();
    // refused: not a registry (exit 3)
    let not_registry = tempfile::tempdir().unwrap();
    let out = run(&[
        "-q",
        "gc",
        "--dry-run",
        "--metrics",
        p,
        not_registry.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let body = std::fs::read_to_string(&prom).unwrap();
    let samples = check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(value(&samples, "registry_gc_last_run_success", None), 0.0);
    assert_eq!(value(&samples, "registry_gc_last_run_exit_code", None), 3.0);
    assert!(samples.iter().all(|(_, l, _)| l["dry_run"] == "true"));
    assert!(
        !samples.iter().any(|(n, _, _)| n == "registry_gc_blobs"),
        "nothing claimed about the registry:\n{body}"
    );

    // bad settings (exit 2): still a textfile, replacing the last one
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[gc]\nmin_age = \"soon\"\n").unwrap();
    let out = run(&[
        "gc",
        "--config",
        bad.to_str().unwrap(),
        "--metrics",
        p,
        "/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let samples = check_exposition(&std::fs::read_to_string(&prom).unwrap()).unwrap();
    assert_eq!(value(&samples, "registry_gc_last_run_exit_code", None), 2.0);

    // keys in STORAGE: refused, and shown nowhere, the textfile's label included
    let out = run(&[
        "gc",
        "--metrics",
        p,
        "s3://AKIAEXAMPLE:wJalrSECRETKEY@bucket/root",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let body = std::fs::read_to_string(&prom).unwrap();
    for shown in [text(&out.stderr), text(&out.stdout), body] {
        assert!(
            !shown.contains("AKIAEXAMPLE") && !shown.contains("wJalrSECRETKEY"),
            "{shown}"
        );
    }
    assert!(
        text(&out.stderr).contains("credentials in STORAGE are not used"),
        "{}",
        text(&out.stderr)
    );

    // A textfile or report that cannot be written is found before the run
    // changes anything (after a sweep, an error would hide what it did).
    for flag in ["--metrics", "--report"] {
        for dry_run in [true, false] {
            let reg = sample_copy();
            let before = tree_state(reg.path());
            let mut args = vec!["-q", "gc", "-m", "--force", "--min-age", "0s"];
            if dry_run {
                args.push("--dry-run");
            }
            args.extend([flag, "/nonexistent-dir/out", reg.path().to_str().unwrap()]);
            let out = run(&args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{flag} (dry run {dry_run}): {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains(&format!("{flag} /nonexistent-dir/out")),
                "{}",
                text(&out.stderr)
            );
            assert_eq!(
                tree_state(reg.path()),
                before,
                "{flag}: nothing was deleted"
            );
        }
    }
}

/// Every file under `root` with its content.
fn tree_state(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(p: &Path, out: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, &mut out);
    out
}

// ---------------------------------------------------------------- logs

#[test]
fn json_logs_are_one_object_per_line() {
    let reg = sample_copy();
    let root = reg.path().to_str().unwrap();
    let out = run(&[
        "-v",
        "--log-format",
        "json",
        "gc",
        "--dry-run",
        "--min-age",
        "0s",
        root,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object: {l:?}: {e}"))
        })
        .collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(
        lines
            .iter()
            .all(|l| l.is_object() && l["level"].is_string() && l["timestamp"].is_string()),
        "{err}"
    );
    let done = lines
        .iter()
        .find(|l| l["fields"]["message"] == "collection finished")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(done["fields"]["storage"], format!("file://{root}"));
    // the summary still goes to stdout, apart from the logs
    assert!(text(&out.stdout).contains("registry-gc dry run on"));

    // errors too, so that stderr stays parseable when a run fails
    // (every command's: the flag is global)
    for command in [
        &["gc"][..],
        &["du"],
        &["fsck"],
        &["restore", "--list"],
        &["purge", "--older-than", "1d"],
    ] {
        let mut args = vec!["--log-format", "json"];
        args.extend_from_slice(command);
        args.push("/nonexistent-registry-root");
        let out = run(&args);
        assert_ne!(out.status.code(), Some(0), "{command:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{command:?}: {err}");
        let l: serde_json::Value =
            serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{command:?}: {e}: {err}"));
        assert_eq!(l["level"], "ERROR", "{command:?}");
        assert!(
            l["fields"]["message"]
                .as_str()
                .unwrap()
                .contains("/nonexistent-registry-root"),
            "{command:?}: {err}"
        );
    }

    // the default is text
    let out = run(&["-v", "gc", "--dry-run", "--min-age", "0s", root]);
    let first = text(&out.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.contains("collection starting")
            && serde_json::from_str::<serde_json::Value>(&first).is_err(),
        "{first}"
    );
    assert_eq!(
        run(&["--log-format", "xml", "gc", root]).status.code(),
        Some(2)
    );
}

// ---------------------------------------------------------------- completions and man

#[test]
fn bash_completion_parses_and_completes_commands_and_gc_flags() {
    let out = run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("registry-gc.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(check.status.success(), "bash -n: {}", text(&check.stderr));

    // what bash does on TAB: the function `complete -p` names, with COMP_WORDS
    let complete = |words: &[&str]| -> Vec<String> {
        let cword = words.len() - 1;
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let prog = format!(
            "source '{}'\nspec=$(complete -p registry-gc) || exit 9\nfn=${{spec##*-F }}; fn=${{fn%% *}}\n\
             COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
             \"$fn\" registry-gc \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            quoted.join(" ")
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&prog)
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(String::from).collect()
    };
    assert_eq!(complete(&["registry-gc", "g"]), vec!["gc"]);
    assert_eq!(complete(&["registry-gc", "gc", "--met"]), vec!["--metrics"]);
    assert_eq!(
        complete(&["registry-gc", "gc", "--registry-c"]),
        vec!["--registry-config"]
    );
    assert_eq!(
        complete(&["registry-gc", "--log-format", ""]),
        vec!["text", "json"]
    );
    assert!(complete(&["registry-gc", "completions", ""]).contains(&"zsh".to_string()));

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let s = text(&out.stdout);
        assert!(
            s.contains("registry-gc") && s.contains("registry-config") && s.contains("metrics"),
            "{shell}"
        );
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// Every long flag of `gc`, from the CLI definition.
fn gc_flags() -> Vec<String> {
    let cmd = registry_gc::cli::Cli::command();
    let gc = cmd.find_subcommand("gc").expect("gc");
    let flags: Vec<String> = gc
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .collect();
    assert!(flags.len() > 15, "{flags:?}");
    flags
}

#[test]
fn man_page_has_every_gc_flag_and_renders() {
    let out = run(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let roff = text(&out.stdout);
    assert_eq!(
        roff.lines()
            .filter(|l| l.starts_with(".TH registry-gc 1 "))
            .count(),
        1,
        "one title:\n{roff}"
    );
    let plain = roff.replace("\\-", "-");
    for f in gc_flags().iter().chain(
        ["--log-format", "--verbose", "--quiet"]
            .map(String::from)
            .iter(),
    ) {
        assert!(plain.contains(f.as_str()), "the man page lacks {f}");
    }
    assert!(
        plain.contains(".SH \"GC OPTIONS\"") || plain.contains(".SH GC OPTIONS"),
        "gc has its own section"
    );
    assert!(plain.contains("Exit codes"));

    // rendered by groff when the machine has it (the roff checks above hold either way)
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = groff {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(roff.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff warnings:\n{}",
            text(&out.stderr)
        );
        let page = Command::new("sh")
            .arg("-c")
            .arg("groff -man -Tutf8 -P-cbou")
            .stdin(std::fs::File::open(write_tmp(&roff)).unwrap())
            .output()
            .unwrap();
        let rendered = text(&page.stdout);
        assert!(
            rendered.contains("GC OPTIONS")
                && rendered.contains("--registry-config")
                && rendered.contains("--metrics"),
            "{rendered}"
        );
    }
}

fn write_tmp(s: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("registry-gc-man-{}.1", std::process::id()));
    std::fs::write(&p, s).unwrap();
    p
}

// ---------------------------------------------------------------- report schema

/// Paths of every field in a report: `a.b` for object fields, `a[].b` inside
/// arrays of objects; `planned.<reason>` for the per-reason entries.
fn field_paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let k = if prefix == "planned" {
                    "<reason>"
                } else {
                    k.as_str()
                };
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                field_paths(x, &p, out);
            }
        }
        serde_json::Value::Array(items) => {
            for x in items.iter().filter(|x| x.is_object()) {
                field_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn report_schema_doc_lists_every_field() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report-schema.md"),
    )
    .unwrap();
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(f, _)| f.to_string()))
        .collect();

    // a real run that fills every array: deletions, a stray, planned reasons
    let reg = sample_copy();
    std::fs::write(reg.path().join("docker/registry/v2/junk"), "x").unwrap();
    let report = reg.path().join("report.json");
    let out = run(&[
        "-q",
        "gc",
        "--dry-run",
        "-m",
        "--min-age",
        "0s",
        "--report",
        report.to_str().unwrap(),
        reg.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let mut actual = BTreeSet::new();
    field_paths(&r, "", &mut actual);
    for arr in ["strays", "deletions"] {
        assert!(
            !r[arr].as_array().unwrap().is_empty(),
            "{arr} must have elements for their fields to be compared"
        );
    }
    // the parts a filesystem dry run leaves empty or null, from the same types
    let failure = registry_gc::report::Failure {
        key: "k".into(),
        error: "e".into(),
    };
    let warning = registry_gc::report::Warning::new("k", "m");
    let floor = registry_gc::storage::counts::RequestFloor::default();
    let broken = registry_gc::recheck::BrokenByRace {
        repository: "r".into(),
        manifest: "m".into(),
        tag: Some("t".into()),
        blob: "b".into(),
        deleted_key: "k".into(),
    };
    for (name, v) in [
        (
            "broken_by_concurrent_pushes[]",
            serde_json::to_value(broken).unwrap(),
        ),
        ("failures[]", serde_json::to_value(failure).unwrap()),
        ("warnings[]", serde_json::to_value(warning).unwrap()),
        ("request_floor", serde_json::to_value(floor).unwrap()),
    ] {
        field_paths(&v, name, &mut actual);
    }

    let undocumented: Vec<_> = actual.difference(&documented).collect();
    let gone: Vec<_> = documented.difference(&actual).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "docs/report-schema.md and the report differ (a field added or removed needs the doc, and maybe schema_version, updated)\n\
         in the report, not documented: {undocumented:?}\ndocumented, not in the report: {gone:?}"
    );
    let version = r["schema_version"].as_u64().unwrap();
    assert!(
        doc.starts_with(&format!("# The JSON report, schema version {version}\n")),
        "the doc is for schema version {version}"
    );
}

// ---------------------------------------------------------------- manifest cache

/// A cache directory that cannot be made is a warning, in `gc` and in `du`,
/// and every manifest is read from storage: the same plan and figures as
/// without a cache.
#[test]
fn a_cache_that_cannot_be_opened_is_a_warning_and_the_run_reads_storage() {
    let reg = sample_copy();
    let root = reg.path().display().to_string();
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let cache_dir = blocker.path().join("cache").display().to_string();
    for command in [&["gc", "--dry-run", "--min-age", "0s"][..], &["du"][..]] {
        let with = |cache: &[&str]| {
            let mut args = command.to_vec();
            args.extend_from_slice(cache);
            args.push(&root);
            run(&args)
        };
        let out = with(&["--cache-dir", &cache_dir]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command:?}: {}",
            text(&out.stderr)
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            all.contains(&format!(
                "{cache_dir}: manifest cache not usable, reading every manifest"
            )),
            "{command:?}: {all}"
        );
        let without = with(&["--no-cache"]);
        let plan = |o: &std::process::Output| {
            text(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("would ") || l.starts_with("seen:") || l.contains(" B "))
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(&out), plan(&without), "{command:?}");
    }
}

/// `--max-manifest-size` is the manifest's limit wherever it is read from: a
/// warm cache stops the run (exit 1) exactly as storage does. On a
/// filesystem it is `du` that reads the cache (its listing states every
/// blob); `gc` there reads storage and leaves a `--cache-dir` alone, and its
/// run stops the same way, nothing deleted.
#[test]
fn max_manifest_size_applies_to_manifests_from_the_cache() {
    let reg = sample_copy();
    let root = reg.path().display().to_string();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let files = |p: &Path| tree_state(p).len();
    // a filesystem gc neither takes from the cache nor fills it
    let gc = |extra: &[&str]| {
        let mut args = vec!["-q", "gc", "-m", "--min-age", "0s", "--force"];
        args.extend_from_slice(extra);
        args.push(&root);
        run(&args)
    };
    let out = gc(&["--dry-run", "--cache-dir", &cache_dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        files(cache.path()),
        0,
        "a filesystem gc left the cache alone"
    );
    // du warms it
    let out = run(&["-q", "du", "--cache-dir", &cache_dir, &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(files(cache.path()) > 0, "du cached the manifests");

    let du = |cache: &[&str]| {
        let mut args = vec!["-q", "du", "--max-manifest-size", "100"];
        args.extend_from_slice(cache);
        args.push(&root);
        run(&args)
    };
    let runs = [
        ("du without the cache", du(&["--no-cache"])),
        ("du with a warm cache", du(&["--cache-dir", &cache_dir])),
        (
            "gc",
            gc(&["--cache-dir", &cache_dir, "--max-manifest-size", "100"]),
        ),
    ];
    for (what, out) in &runs {
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: every manifest is over 100 bytes\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("larger than the 100-byte limit")
                && text(&out.stderr).contains("--max-manifest-size"),
            "{what}: {}",
            text(&out.stderr)
        );
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-registry");
    assert_eq!(files(reg.path()), files(&src), "nothing was deleted");
}

// ---------------------------------------------------------------- --registry-config

/// A copy of the sample registry, and a directory holding `config.yml`, the
/// registry's configuration of it (filesystem driver).
fn sample_with_registry_config() -> (tempfile::TempDir, tempfile::TempDir) {
    let reg = sample_copy();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            reg.path().display()
        ),
    )
    .unwrap();
    (reg, dir)
}

/// Every command that reads a registry takes `--registry-config FILE` in place
/// of STORAGE, `restore` with its run id as the lone positional (as with
/// `[storage] url` in `--config`); STORAGE and `--registry-config` together
/// are a usage error.
#[test]
fn every_command_takes_registry_config_in_place_of_storage() {
    let (reg, dir) = sample_with_registry_config();
    let yml = dir.path().join("config.yml");
    let y = yml.to_str().unwrap();
    let ok = |out: &Output, what: &str| {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    let blob_of = |p: &Path| p.join("docker/registry/v2/blobs");
    let blobs_before = std::fs::read_dir(blob_of(reg.path()).join("sha256"))
        .unwrap()
        .count();

    ok(&run(&["-q", "du", "--registry-config", y]), "du");
    // as `registry garbage-collect` takes it: the config file as the argument
    let out = run(&["gc", "--dry-run", "-m", "--min-age", "0s", y]);
    ok(&out, "gc --dry-run CONFIG.YML");
    assert!(
        text(&out.stdout).contains(&format!("dry run on file://{}", reg.path().display())),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_dir(blob_of(reg.path()).join("sha256"))
            .unwrap()
            .count(),
        blobs_before,
        "a dry run"
    );
    let out = run(&["-q", "fsck", "--registry-config", y]);
    assert!(
        matches!(out.status.code(), Some(0 | 5)),
        "fsck ran: {}",
        text(&out.stderr)
    );
    let out = run(&[
        "-q",
        "gc",
        "-m",
        "--min-age",
        "0s",
        "--force",
        "--quarantine",
        "--registry-config",
        y,
    ]);
    ok(&out, "gc --quarantine");
    let runs: Vec<String> = std::fs::read_dir(reg.path().join("registry-gc-quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1, "one quarantine run: {runs:?}");
    let run_id = runs[0].as_str();

    let out = run(&["restore", "--list", "--registry-config", y]);
    ok(&out, "restore --list");
    assert!(text(&out.stdout).contains(run_id), "{}", text(&out.stdout));

    // the lone positional is the run id, not STORAGE
    let out = run(&["restore", "--registry-config", y, run_id]);
    ok(&out, "restore --registry-config FILE RUN-ID");
    let unknown = run(&["restore", "--registry-config", y, "20260101T000000Z-abcdef"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
    assert!(
        !text(&unknown.stderr).contains("cannot be used with"),
        "refused by the parser: {}",
        text(&unknown.stderr)
    );
    let root = reg.path().to_str().unwrap();
    for args in [
        vec!["restore", "--registry-config", y, root, run_id],
        vec!["gc", "--dry-run", "--registry-config", y, root],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("both name the storage"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_dir(blob_of(reg.path()).join("sha256"))
            .unwrap()
            .count(),
        blobs_before,
        "restored"
    );
    ok(
        &run(&["-q", "purge", "--older-than", "0s", "--registry-config", y]),
        "purge",
    );
}

/// A variable that is not UTF-8 made `--registry-config` panic (exit code
/// 101), whatever the variable. One the registry's storage does not read is
/// left out; one of its storage settings is refused by name (exit code 2).
#[test]
fn registry_config_with_a_variable_that_is_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (_reg, dir) = sample_with_registry_config();
    let yml = dir.path().join("config.yml");
    let du = |name: &str| {
        let mut cmd = Command::new(binary());
        cmd.args(["-q", "du", "--registry-config", yml.to_str().unwrap()])
            .env_remove("REGISTRY_GC_LOG")
            .env(
                "XDG_CACHE_HOME",
                std::env::temp_dir().join("registry-gc-tests-cache"),
            )
            .env(name, OsStr::from_bytes(b"caf\xe9"));
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"REGISTRY_STORAGE") && k != name {
                cmd.env_remove(k);
            }
        }
        cmd.output().expect("run registry-gc")
    };
    for other in ["LC_NOT_UTF8", "REGISTRY_HTTP_SECRET"] {
        let out = du(other);
        assert_eq!(out.status.code(), Some(0), "{other}: {}", text(&out.stderr));
    }
    let var = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY";
    let out = du(var);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{var}: is not valid UTF-8")),
        "{}",
        text(&out.stderr)
    );
}

/// A cache hit must not make a manifest whose blob is gone look present. On a
/// filesystem the collection's listing names blobs by their directories (no
/// stat per blob), and it is the read of a manifest that finds its directory
/// without `data`: a warm cache must see, plan and report what a cold run does
/// (the tag dangling, its revision and layers collected), not keep the broken
/// image as if it were whole.
#[test]
fn a_cached_manifest_whose_data_is_gone_is_missing_as_without_the_cache() {
    let reg = sample_copy();
    let root = reg.path().display().to_string();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let reports = tempfile::tempdir().unwrap();
    let gc = |name: &str, extra: &[&str]| {
        let report = reports.path().join(name).display().to_string();
        let mut args = vec!["-q", "gc", "--dry-run", "--min-age", "0s"];
        args.extend_from_slice(extra);
        args.extend(["--report", &report, &root]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        r
    };
    // the cache warmed on the intact registry, by `du`, whose listing states
    // every blob and which takes from the cache and fills it on a filesystem
    // too (a filesystem `gc` leaves it alone)
    let out = run(&["-q", "du", "--cache-dir", &cache_dir, &root]);
    assert_eq!(out.status.code(), Some(0), "du: {}", text(&out.stderr));
    let v2 = reg.path().join("docker/registry/v2");
    let link =
        std::fs::read_to_string(v2.join("repositories/team/app/_manifests/tags/v1/current/link"))
            .unwrap();
    let hex = link.trim().strip_prefix("sha256:").unwrap().to_string();
    assert!(
        cache
            .path()
            .join(format!("manifests/sha256/{}/{hex}", &hex[..2]))
            .is_file(),
        "the manifest of team/app:v1 is cached"
    );
    // its data goes, its directory stays (a delete cut short, a bad restore)
    std::fs::remove_file(v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))).unwrap();

    let cold = gc("cold.json", &["--no-cache"]);
    let warm = gc("warm.json", &["--cache-dir", &cache_dir]);
    let dangling_tag = cold["deletions"].as_array().unwrap().iter().any(|d| {
        d["reason"] == "dangling-tag"
            && d["key"]
                .as_str()
                .unwrap()
                .contains("team/app/_manifests/tags/v1/")
    });
    assert!(
        dangling_tag,
        "without the cache, team/app:v1 is dangling: {cold}"
    );
    for field in ["seen", "planned", "kept_blobs"] {
        assert_eq!(
            warm[field], cold[field],
            "{field}: a warm cache, then a cold one"
        );
    }
    let deletions = |r: &serde_json::Value| {
        let mut d: Vec<String> = r["deletions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| format!("{} {}", d["reason"], d["key"]))
            .collect();
        d.sort();
        d
    };
    assert_eq!(
        deletions(&warm),
        deletions(&cold),
        "a warm cache, then a cold one"
    );
}

/// A cache entry that cannot be written whole (a full disk; here the file size
/// limit, which fails the write the same way) leaves nothing in the cache
/// directory: a temporary file left per manifest and run would never be used
/// nor removed, and on a full disk would keep it full.
#[test]
fn a_cache_write_that_fails_leaves_no_temporary_file() {
    use std::os::unix::process::CommandExt;
    let reg = sample_copy();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary());
    // `du` fills the cache on a filesystem (a filesystem `gc` leaves it alone)
    cmd.args(["-q", "du", "--cache-dir"])
        .arg(cache.path())
        .arg(reg.path())
        .env_remove("REGISTRY_GC_LOG");
    // writes past 64 bytes of a file fail (EFBIG), as writes on a full disk do
    // (ENOSPC); `du` itself writes no file
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let left: Vec<PathBuf> = tree_state(cache.path()).into_keys().collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}
