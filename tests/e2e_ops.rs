//! Operator drop-in: `--registry-config` on the configs the real registry runs
//! with (filesystem, and the s3 driver on moto), with its `REGISTRY_STORAGE_*`
//! overrides, each run through the real binary.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::cloud::{Emulator, BUCKET};
use common::collector::{self, binary};
use common::model::Mode;
use common::registry::{s3_driver_yaml, Registry};
use common::scenarios;
use common::tree;

/// Runs the binary with exactly these `REGISTRY_*` variables (others removed,
/// so the machine's environment cannot change the outcome).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).env_remove("REGISTRY_GC_LOG").env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join("registry-gc-tests-cache"),
    );
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run registry-gc")
}

fn ok(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn report_without_volatile(path: &Path) -> serde_json::Value {
    let mut r = collector::read_report(path);
    let o = r.as_object_mut().unwrap();
    for k in ["started_at", "duration_seconds", "phase_seconds", "storage"] {
        o.remove(k);
    }
    // deletions come in sweep order, which within a phase follows the listing's
    // (concurrent) order: compare them as a set
    if let Some(serde_json::Value::Array(d)) = o.get_mut("deletions") {
        d.sort_by_key(|x| x["key"].as_str().unwrap_or_default().to_string());
    }
    r
}

#[test]
fn registry_config_of_a_filesystem_registry_collects_like_storage_and_env_overrides_the_root() {
    // the registry runs with its config, images are pushed, one is deleted through the API
    let dir = tempfile::Builder::new()
        .prefix("e2e-ops-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let mut reg = Registry::start(&root);
    let sc = scenarios::mixed(&reg);
    reg.stop();
    let config = reg.config_path().to_path_buf();
    tree::age_tree(&root, Duration::from_secs(2 * 3600));

    // the same collection with STORAGE, and with the env override pointing at a third copy
    let by_storage = dir.path().join("by-storage");
    let by_env = dir.path().join("by-env");
    tree::copy_tree(&root, &by_storage);
    tree::copy_tree(&root, &by_env);
    tree::age_tree(&by_storage, Duration::from_secs(2 * 3600));
    tree::age_tree(&by_env, Duration::from_secs(2 * 3600));
    let before = tree::keys(&root);

    let reports = dir.path();
    let rep = |name: &str| reports.join(format!("{name}.json")).display().to_string();
    let out = run_env(
        &[
            "gc",
            "--min-age",
            "0s",
            "--report",
            &rep("storage"),
            by_storage.to_str().unwrap(),
        ],
        &[],
    );
    ok(&out, "gc STORAGE");
    let cfg = config.to_str().unwrap();
    let out = run_env(
        &[
            "gc",
            "--registry-config",
            cfg,
            "--min-age",
            "0s",
            "--report",
            &rep("config"),
        ],
        &[],
    );
    ok(&out, "gc --registry-config");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("on file://{}", root.display())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let after = tree::keys(&root);
    assert_ne!(after, before, "the run deleted something");
    assert_eq!(
        after,
        tree::keys(&by_storage),
        "--registry-config and STORAGE leave the same keys"
    );
    assert_eq!(
        report_without_volatile(Path::new(&rep("config"))),
        report_without_volatile(Path::new(&rep("storage")))
    );
    // where the time went: every phase of a real run timed, adding up to no more than the run
    let r = collector::read_report(Path::new(&rep("config")));
    let phases = r["phase_seconds"]
        .as_object()
        .expect("phase_seconds in the report");
    let names: Vec<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "check_after_sweep",
            "listing",
            "mark",
            "plan",
            "recheck",
            "stat",
            "sweep"
        ]
    );
    let secs: Vec<f64> = phases.values().map(|v| v.as_f64().unwrap()).collect();
    let timed = |phase: &str| phases[phase].as_f64().unwrap() > 0.0;
    // a filesystem run stats what it would delete
    assert!(
        secs.iter().all(|s| *s >= 0.0) && timed("listing") && timed("stat") && timed("sweep"),
        "{phases:?}"
    );
    assert!(
        secs.iter().sum::<f64>() <= r["duration_seconds"].as_f64().unwrap(),
        "{r}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("time: listing ") && stdout.contains(", sweep "),
        "{stdout}"
    );

    // the survivors pull back with sha256 checks through the registry, with its own config
    let reg = Registry::start(&root);
    let n = sc
        .pull_verify_survivors(reg.url(), Mode::Default)
        .unwrap_or_else(|e| panic!("after --registry-config: {e}"));
    assert!(n >= 10, "{n}");
    drop(reg);

    // REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY wins over the file, as for the registry
    let env_root = by_env.display().to_string();
    let out = run_env(
        &[
            "gc",
            "--registry-config",
            cfg,
            "--min-age",
            "0s",
            "--report",
            &rep("env"),
        ],
        &[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &env_root)],
    );
    ok(
        &out,
        "gc --registry-config with REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
    );
    assert_eq!(
        tree::keys(&by_env),
        after,
        "the override's root was collected"
    );
    assert_eq!(
        collector::read_report(Path::new(&rep("env")))["storage"],
        format!("file://{env_root}")
    );

    // an unsupported driver from the environment is a usage error naming it
    let out = run_env(
        &["gc", "--registry-config", cfg],
        &[("REGISTRY_STORAGE", "swift")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"swift\" is not supported") && err.contains(cfg),
        "{err}"
    );
    // and STORAGE with it is refused by the command line
    let out = run_env(&["gc", "--registry-config", cfg, "/var/lib/registry"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// yaml.v2 applies a merge key where it stands, over the keys before it: the
/// registry, given `rootdirectory: A` and then `<<: {rootdirectory: B}`,
/// writes under B, and `--registry-config` collects B (YAML's own rule, the
/// mapping's keys winning, would make it A: a tree the registry never wrote).
#[test]
fn registry_config_applies_a_merge_key_where_the_registry_does() {
    let dir = tempfile::Builder::new()
        .prefix("e2e-ops-merge-")
        .tempdir()
        .unwrap();
    let (explicit, merged) = (dir.path().join("explicit"), dir.path().join("merged"));
    let quoted = |p: &Path| serde_json::to_string(p.to_str().unwrap()).unwrap();
    let driver = format!(
        "  filesystem:\n    rootdirectory: {}\n    <<: {{rootdirectory: {}}}\n",
        quoted(&explicit),
        quoted(&merged)
    );
    let mut reg = Registry::start_with_driver(&driver);
    let digest = common::http::upload_blob(reg.url(), "merge/probe", b"where did it go");
    reg.stop();
    let hex = digest.trim_start_matches("sha256:");
    let blob = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    assert!(merged.join(&blob).is_file(), "{}", reg.logs());
    assert!(!explicit.exists());

    let report = dir.path().join("report.json");
    let out = run_env(
        &[
            "gc",
            "--dry-run",
            "--registry-config",
            reg.config_path().to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    ok(&out, "gc --dry-run --registry-config");
    assert_eq!(
        collector::read_report(&report)["storage"],
        format!("file://{}", merged.display())
    );
}

#[test]
fn registry_config_of_an_s3_registry_on_moto_collects_like_storage() {
    let moto = Emulator::Moto;
    moto.require();
    let root = Emulator::unique_root("e2e-ops-regcfg");
    let mut reg = Registry::start_with_driver(&s3_driver_yaml(&moto.endpoint(), BUCKET, &root));
    let sc = scenarios::mixed(&reg);
    reg.stop();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = rt.block_on(moto.keys(&root));
    assert!(!before.is_empty());
    // object stores cannot be back-dated: let the newest object be a second old
    std::thread::sleep(Duration::from_secs(2));

    // the plan with STORAGE and flags (a dry run), then the collection with the
    // registry's own config and nothing else
    let dir = tempfile::tempdir().unwrap();
    let dry = dir.path().join("dry.json");
    let mut args = vec![
        "gc".to_string(),
        "--dry-run".into(),
        "--min-age".into(),
        "0s".into(),
        "--no-cache".into(),
    ];
    args.extend(moto.gc_args());
    args.extend([
        "--report".to_string(),
        dry.display().to_string(),
        moto.url(&root),
    ]);
    ok(
        &run_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]),
        "dry run with STORAGE",
    );
    let planned = collector::report_deletions(&collector::read_report(&dry));
    assert!(!planned.is_empty());

    let real = dir.path().join("real.json");
    let cfg = reg.config_path().display().to_string();
    let out = run_env(
        &[
            "gc",
            "--registry-config",
            &cfg,
            "--min-age",
            "0s",
            "--no-cache",
            "--report",
            real.to_str().unwrap(),
        ],
        &[],
    );
    ok(&out, "gc --registry-config (s3 driver)");
    let after = rt.block_on(moto.keys(&root));
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(
        deleted, planned,
        "--registry-config deleted exactly what STORAGE planned"
    );
    let r = collector::read_report(&real);
    assert_eq!(
        r["storage"].as_str().unwrap(),
        format!("s3://{BUCKET}/{root} at {}", moto.endpoint())
    );

    let reg = Registry::start_with_driver(&s3_driver_yaml(&moto.endpoint(), BUCKET, &root));
    let n = sc
        .pull_verify_survivors(reg.url(), Mode::Default)
        .unwrap_or_else(|e| panic!("through the s3 driver: {e}"));
    assert!(n >= 10);

    // a bad value in the file the registry ran with is named by its key
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(reg.config_path())
            .unwrap()
            .replace("secure: false", "secure: 1"),
    )
    .unwrap();
    let out = run_env(&["gc", "--registry-config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.s3.secure: expected a boolean"),
        "{err}"
    );
}
