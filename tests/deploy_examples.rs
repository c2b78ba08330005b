//! The deployment examples in deploy/: every file parses (YAML, systemd units,
//! cron, shell), and every `registry-gc ...` command line in every one of them
//! is parsed by the real command-line definition, so the examples cannot drift
//! from the flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use registry_gc::cli::Cli;
use serde::Deserialize;
use serde_norway::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    files(&deploy_dir(), &mut v);
    v.sort();
    assert!(v.len() >= 10, "{v:?}");
    v
}

fn ext(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Op,
}

/// Splits a shell line into words and operators (`;`, `|`, `&`, `<`, `>` and
/// their combinations), with single and double quotes and backslashes; `#` at
/// the start of a word begins a comment. Variables stay literal (`$X` is a word).
fn shell_tokens(line: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => cur.get_or_insert_with(String::new).extend(chars.next()),
            '#' if cur.is_none() => break,
            c if c.is_whitespace() => out.extend(cur.take().map(Tok::Word)),
            ';' | '|' | '&' | '<' | '>' | '(' | ')' => {
                // `2>` is a redirection, not the word 2
                if cur
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
                    && c == '>'
                {
                    cur = None;
                }
                out.extend(cur.take().map(Tok::Word));
                if out.last() != Some(&Tok::Op) {
                    out.push(Tok::Op);
                }
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur.take().map(Tok::Word));
    out
}

fn is_registry_gc(word: &str) -> bool {
    Path::new(word)
        .file_name()
        .is_some_and(|n| n == "registry-gc")
}

/// Every `registry-gc ...` command in a shell text, up to the next operator.
fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut cmds = Vec::new();
    for line in joined.lines() {
        let toks = shell_tokens(line);
        let mut i = 0;
        while i < toks.len() {
            // a word after an option is that option's value (`--path tools/registry-gc`)
            let after_option = i > 0 && matches!(&toks[i - 1], Tok::Word(p) if p.starts_with('-'));
            if let Tok::Word(w) = &toks[i] {
                if is_registry_gc(w) && !after_option {
                    let argv: Vec<String> = toks[i..]
                        .iter()
                        .map_while(|t| match t {
                            Tok::Word(w) => Some(w.clone()),
                            Tok::Op => None,
                        })
                        .collect();
                    i += argv.len();
                    cmds.push(argv);
                    continue;
                }
            }
            i += 1;
        }
    }
    cmds
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .collect()
}

/// Commands in YAML: a container's `command` (+ `args`) list, and the shell of
/// CI steps (`run`, `script`, `before_script`, `after_script`).
fn yaml_commands(v: &Value, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Mapping(m) => {
            let list = |k: &str| -> Vec<String> {
                m.get(k)
                    .and_then(Value::as_sequence)
                    .map(|s| {
                        s.iter()
                            .map(|x| x.as_str().expect("a string argument").to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let command = list("command");
            if command.first().is_some_and(|c| is_registry_gc(c)) {
                out.push(command.into_iter().chain(list("args")).collect());
            }
            for (k, x) in m {
                match (k.as_str(), x) {
                    (
                        Some("run" | "script" | "before_script" | "after_script"),
                        Value::String(s),
                    ) => out.extend(shell_commands(s)),
                    (Some("script" | "before_script" | "after_script"), Value::Sequence(items)) => {
                        for s in items.iter().filter_map(Value::as_str) {
                            out.extend(shell_commands(s));
                        }
                    }
                    (Some("command" | "args"), _) => {}
                    _ => yaml_commands(x, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|x| yaml_commands(x, out)),
        _ => {}
    }
}

/// `[Section]` -> key -> values of a systemd unit file.
fn unit_sections(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        let s = section
            .clone()
            .unwrap_or_else(|| panic!("line {}: a key before any section", n + 1));
        assert!(
            k.trim().chars().all(|c| c.is_ascii_alphanumeric()),
            "line {}: bad key {k:?}",
            n + 1
        );
        out.get_mut(&s)
            .unwrap()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

/// Every registry-gc command line of one file.
fn commands_of(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    match ext(path) {
        "yaml" | "yml" => {
            let mut out = Vec::new();
            for d in yaml_docs(path) {
                yaml_commands(&d, &mut out);
            }
            out
        }
        "service" => unit_sections(&text)
            .get("Service")
            .and_then(|s| s.get("ExecStart"))
            .into_iter()
            .flatten()
            .flat_map(|v| shell_commands(v.trim_start_matches(['-', '@', '+', '!', ':'])))
            .collect(),
        "sh" | "cron" => shell_commands(&text),
        "md" => {
            let mut out = Vec::new();
            let mut in_code = false;
            for line in text.lines() {
                if line.trim_start().starts_with("```") {
                    in_code = !in_code;
                } else if in_code {
                    out.extend(shell_commands(line));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

#[test]
fn the_extractor_finds_commands_and_the_parser_refuses_a_drifted_one() {
    let cmds =
        shell_commands("flock -n /l /usr/bin/registry-gc -q gc \\\n  --report \"/a b.json\" /r || logger x # registry-gc not this\n");
    assert_eq!(
        cmds,
        vec![vec![
            "/usr/bin/registry-gc",
            "-q",
            "gc",
            "--report",
            "/a b.json",
            "/r"
        ]]
    );
    assert_eq!(
        shell_commands("registry-gc gc /r 2>/dev/null; echo"),
        vec![vec!["registry-gc", "gc", "/r"]]
    );
    assert!(shell_commands("cargo install --path tools/registry-gc").is_empty());
    assert!(Cli::try_parse_from(&cmds[0]).is_ok());
    assert!(
        Cli::try_parse_from(["registry-gc", "gc", "--delete-untaged", "/r"]).is_err(),
        "a misspelt flag is caught"
    );
}

#[test]
fn every_registry_gc_command_in_every_example_parses() {
    let mut total = 0;
    for path in all_files() {
        let name = path
            .strip_prefix(deploy_dir())
            .unwrap()
            .display()
            .to_string();
        let cmds = commands_of(&path);
        // the cron entry runs the wrapper script and the timer starts the
        // service; both are checked on their own
        if !["cron/registry-gc.cron", "systemd/registry-gc.timer"].contains(&name.as_str()) {
            assert!(!cmds.is_empty(), "{name}: no registry-gc command found");
        }
        for argv in &cmds {
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{name}: {argv:?} does not parse:\n{e}");
            }
            assert!(argv.iter().any(|a| a == "gc"), "{name}: {argv:?}");
            total += 1;
        }
    }
    assert!(total >= 9, "{total}");
}

#[test]
fn yaml_examples_parse_and_say_what_they_promise() {
    let mut cronjobs = 0;
    for path in all_files()
        .into_iter()
        .filter(|p| matches!(ext(p), "yaml" | "yml"))
    {
        let name = path.display().to_string();
        let docs = yaml_docs(&path);
        assert!(!docs.is_empty(), "{name}");
        for d in &docs {
            if d["kind"].as_str() == Some("CronJob") {
                cronjobs += 1;
                let spec = &d["spec"];
                assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"), "{name}");
                assert_eq!(
                    spec["schedule"]
                        .as_str()
                        .map(|s| s.split_whitespace().count()),
                    Some(5),
                    "{name}"
                );
                let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
                assert!(
                    matches!(pod["restartPolicy"].as_str(), Some("Never" | "OnFailure")),
                    "{name}"
                );
                assert_eq!(
                    pod["serviceAccountName"].as_str(),
                    Some("registry-gc"),
                    "{name}"
                );
                let sa = docs
                    .iter()
                    .find(|x| x["kind"].as_str() == Some("ServiceAccount"))
                    .unwrap_or_else(|| panic!("{name}: no ServiceAccount"));
                let annotations = sa["metadata"]["annotations"]
                    .as_mapping()
                    .unwrap_or_else(|| panic!("{name}: no identity annotation"));
                let identity = [
                    "eks.amazonaws.com/role-arn",
                    "iam.gke.io/gcp-service-account",
                    "azure.workload.identity/client-id",
                ];
                assert!(
                    annotations
                        .keys()
                        .filter_map(Value::as_str)
                        .any(|k| identity.contains(&k)),
                    "{name}"
                );
                if annotations.contains_key("azure.workload.identity/client-id") {
                    let labels = &spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"];
                    assert_eq!(
                        labels["azure.workload.identity/use"].as_str(),
                        Some("true"),
                        "{name}: the webhook needs the pod label"
                    );
                }
                let mounts = pod["containers"][0]["volumeMounts"].as_sequence().unwrap();
                assert!(
                    mounts
                        .iter()
                        .any(|m| m["mountPath"].as_str() == Some("/etc/docker/registry")),
                    "{name}: the registry's config"
                );
            }
        }
        if name.ends_with("github-actions.yml") {
            let w = &docs[0];
            assert!(
                w["on"]["schedule"][0]["cron"].is_string()
                    && w["jobs"]["gc"]["steps"].is_sequence(),
                "{name}"
            );
            assert_eq!(
                w["permissions"]["id-token"].as_str(),
                Some("write"),
                "{name}: OIDC"
            );
        }
        if name.ends_with("gitlab-ci.yml") {
            let job = &docs[0]["registry-gc"];
            assert!(
                job["script"].is_sequence() && job["rules"].is_sequence(),
                "{name}"
            );
            assert_eq!(
                job["allow_failure"]["exit_codes"][0].as_u64(),
                Some(4),
                "{name}"
            );
        }
    }
    assert_eq!(cronjobs, 3);
}

#[test]
fn systemd_units_verify() {
    let dir = deploy_dir().join("systemd");
    let service = std::fs::read_to_string(dir.join("registry-gc.service")).unwrap();
    let timer = std::fs::read_to_string(dir.join("registry-gc.timer")).unwrap();
    let s = unit_sections(&service);
    assert_eq!(s.keys().collect::<Vec<_>>(), ["Service", "Unit"]);
    assert_eq!(s["Service"]["Type"], ["oneshot"]);
    assert_eq!(
        s["Service"]["SuccessExitStatus"],
        ["4"],
        "exit 4 is not a unit failure"
    );
    let t = unit_sections(&timer);
    assert_eq!(t.keys().collect::<Vec<_>>(), ["Install", "Timer", "Unit"]);
    assert!(t["Timer"].contains_key("OnCalendar"));

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "systemd-analyze is missing (apt-get install systemd)"
        );
        return;
    };
    assert!(version.status.success());
    // verify checks that ExecStart's binary exists: point it at the one built here
    let tmp = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_registry-gc");
    std::fs::write(
        tmp.path().join("registry-gc.service"),
        service.replace("/usr/local/bin/registry-gc", exe),
    )
    .unwrap();
    std::fs::write(tmp.path().join("registry-gc.timer"), &timer).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(tmp.path().join("registry-gc.service"))
        .arg(tmp.path().join("registry-gc.timer"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify:\n{err}"
    );
}

#[test]
fn cron_entry_and_wrapper_are_well_formed() {
    let dir = deploy_dir().join("cron");
    let cron = std::fs::read_to_string(dir.join("registry-gc.cron")).unwrap();
    let jobs: Vec<&str> = cron
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('='))
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let fields: Vec<&str> = jobs[0].split_whitespace().collect();
    assert!(
        fields.len() > 7 && fields[5] == "root",
        "five time fields, a user, a command: {fields:?}"
    );
    assert_eq!(&fields[6..8], ["flock", "-n"], "runs never overlap");
    let wrapper = Path::new(fields.last().unwrap()).file_name().unwrap();
    let script = dir.join(wrapper);
    assert!(
        script.is_file(),
        "the wrapper {} is in deploy/cron",
        wrapper.to_string_lossy()
    );
    let out = Command::new("sh").arg("-n").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "sh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("4)"), "exit 4 is handled on its own");
}
