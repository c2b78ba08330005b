//! Faults with the real binary: on moto (S3) behind bench/proxy.py, which fails a
//! seeded share of requests (500, 503 SlowDown, 429, hangs, dropped connections,
//! answers lost after the request was applied, bodies cut short); and `kill -9` at
//! seeded points of a run, on S3 behind a latency proxy and on the filesystem.
//! After each, a rerun without faults must reach exactly the key set a clean run
//! leaves on an identical copy, and every image that must survive is pulled back
//! through the real registry with sha256 checks.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cloud::{Emulator, BUCKET};
use common::collector::{self, aged_copy, binary, gc, pushed};
use common::model::Mode;
use common::registry::{s3_driver_yaml, Registry};
use common::scenarios::{self, Scenario};
use common::tree;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// bench/proxy.py in front of moto, on a free port; killed (by its own pid) on drop.
struct Proxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(extra: &[String]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/proxy.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .args(["--upstream", &Emulator::Moto.endpoint()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 bench/proxy.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Proxy {
                    child,
                    port,
                    _dir: dir,
                };
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("bench/proxy.py exited at start: {st}");
            }
            assert!(Instant::now() < deadline, "bench/proxy.py did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn counts(&self) -> serde_json::Value {
        let r = common::http::send("GET", &format!("{}/__counts", self.endpoint()), &[], None)
            .expect("proxy counts");
        serde_json::from_slice(&r.body).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `registry-gc gc` arguments for a run on `root` in the moto bucket through
/// `endpoint`, with a fresh manifest cache (so manifests are read through it).
fn s3_args(endpoint: &str, root: &str, cache: &Path) -> Vec<String> {
    let direct = endpoint == Emulator::Moto.endpoint();
    let mut args = vec!["gc".to_string()];
    let mut flags = Emulator::Moto.gc_args();
    let at = flags.iter().position(|a| a == "--endpoint").unwrap();
    flags[at + 1] = endpoint.to_string();
    args.extend(flags);
    if !direct {
        // a hung request times out after 5 s and is retried, rather than after 30 s
        args.extend(["-o", "timeout=5s"].map(String::from));
    }
    args.extend(
        [
            "--delete-untagged",
            "--min-age",
            "0s",
            "--upload-max-age",
            "0s",
            "--force",
            "--cache-dir",
        ]
        .map(String::from),
    );
    args.push(cache.display().to_string());
    args.push(Emulator::Moto.url(root));
    args
}

fn run_s3(endpoint: &str, root: &str) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    let args = s3_args(endpoint, root, cache.path());
    collector::run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn show(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_same(got: &BTreeSet<String>, want: &BTreeSet<String>, what: &str) {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: left but not in the clean result: {extra:#?}\nmissing: {missing:#?}"
    );
}

/// Uploads the scenario's tree under a fresh root and collects it cleanly
/// (straight to moto): the end state every faulty run must converge to.
fn s3_clean_result(rt: &tokio::runtime::Runtime, sc: &Scenario) -> BTreeSet<String> {
    let root = Emulator::unique_root("faults-clean");
    rt.block_on(Emulator::Moto.upload_tree(&sc.root, &root));
    let out = run_s3(&Emulator::Moto.endpoint(), &root);
    assert_eq!(out.status.code(), Some(0), "clean run: {}", show(&out));
    rt.block_on(Emulator::Moto.keys(&root))
}

fn pull_survivors_through_s3(sc: &Scenario, root: &str, what: &str) {
    let reg =
        Registry::start_with_driver(&s3_driver_yaml(&Emulator::Moto.endpoint(), BUCKET, root));
    let n = sc
        .pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
        .unwrap_or_else(|e| panic!("{what}: through the s3 driver: {e}"));
    assert!(n >= 10, "{what}: only {n} images pulled");
}

#[test]
fn s3_through_a_faulty_proxy_ends_correct_or_fails_safely_and_a_rerun_converges() {
    Emulator::Moto.require();
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let clean = s3_clean_result(&rt, &sc);
    let mut outcomes = Vec::new();
    let mut last_root = String::new();
    for seed in 0..4u64 {
        let root = Emulator::unique_root("faults-proxy");
        rt.block_on(Emulator::Moto.upload_tree(&sc.root, &root));
        let before = rt.block_on(Emulator::Moto.keys(&root));
        let proxy = Proxy::start(
            &[
                "--latency-ms",
                "0",
                "--fault-rate",
                "0.15",
                "--fault-seed",
                &seed.to_string(),
                "--hang-seconds",
                "8",
            ]
            .map(String::from),
        );
        let out = run_s3(&proxy.endpoint(), &root);
        let faults = proxy.counts()["faults"].clone();
        drop(proxy);
        let injected: u64 = faults
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert!(injected > 0, "seed {seed}: no fault injected");
        let after = rt.block_on(Emulator::Moto.keys(&root));
        let what = format!("seed {seed} (faults {faults})");
        match out.status.code() {
            // object_store's retries got through: the clean result
            Some(0) => assert_same(&after, &clean, &format!("{what}: exit 0")),
            // stopped before the sweep: nothing deleted
            Some(1) => assert_same(
                &after,
                &before,
                &format!("{what}: exit 1 must delete nothing; {}", show(&out)),
            ),
            // some deletions failed: nothing beyond the clean run's deletions
            Some(4) => {
                let lost: Vec<_> = clean.difference(&after).collect();
                assert!(
                    lost.is_empty(),
                    "{what}: exit 4 deleted what a clean run keeps: {lost:#?}"
                );
            }
            _ => panic!("{what}: {}", show(&out)),
        }
        outcomes.push(out.status.code().unwrap());
        let rerun = run_s3(&Emulator::Moto.endpoint(), &root);
        assert_eq!(
            rerun.status.code(),
            Some(0),
            "{what}: rerun: {}",
            show(&rerun)
        );
        assert_same(
            &rt.block_on(Emulator::Moto.keys(&root)),
            &clean,
            &format!("{what}: after the rerun"),
        );
        last_root = root;
    }
    eprintln!("exit codes through the faulty proxy: {outcomes:?}");
    pull_survivors_through_s3(&sc, &last_root, "after faults and a rerun");
}

/// An S3-compatible store that knows only ListObjects version 1 answers a
/// ListObjectsV2 request with its first page, `IsTruncated` and no
/// continuation token, whatever page was asked for; object_store reads no
/// token as the end of the listing. bench/proxy.py --list-v1 makes moto
/// such a store. A registry larger than a page must stop the run before the
/// sweep, naming the cause; one that fits in a page is listed whole.
#[test]
fn s3_a_store_without_list_objects_v2_stops_the_run_before_the_sweep() {
    Emulator::Moto.require();
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let clean = s3_clean_result(&rt, &sc);
    let proxy = Proxy::start(&["--latency-ms", "0", "--list-v1"].map(String::from));
    let with_page = |root: &str, page: Option<usize>| {
        let cache = tempfile::tempdir().unwrap();
        let mut args = s3_args(&proxy.endpoint(), root, cache.path());
        let url = args.pop().unwrap();
        if let Some(page) = page {
            args.extend(["-o".to_string(), format!("list_page_size={page}")]);
        }
        args.push(url);
        collector::run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let root = Emulator::unique_root("faults-list-v1");
    let uploaded = rt.block_on(Emulator::Moto.upload_tree(&sc.root, &root));
    assert!((100..1000).contains(&uploaded), "{uploaded} keys");
    let before = rt.block_on(Emulator::Moto.keys(&root));
    let out = with_page(&root, Some(50));
    let after = rt.block_on(Emulator::Moto.keys(&root));
    assert_same(&after, &before, &format!("pages of 50: {}", show(&out)));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ListObjectsV2") && stderr.contains("nothing will be deleted"),
        "{stderr}"
    );

    // the whole registry in one page: nothing is cut off, the clean result
    let out = with_page(&root, None);
    assert_eq!(out.status.code(), Some(0), "one page: {}", show(&out));
    assert_same(
        &rt.block_on(Emulator::Moto.keys(&root)),
        &clean,
        "one page, through a store without ListObjectsV2",
    );
}

/// Kills the process with SIGKILL once `ready` says so, then waits for it.
fn kill_when(
    mut child: Child,
    ready: impl Fn() -> bool,
    extra_delay: Duration,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    while !ready() {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the kill point
        }
        if start.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(extra_delay);
    let finished = child.try_wait().unwrap().is_some();
    child.kill().unwrap_or(()); // SIGKILL on Unix
    child.wait().unwrap();
    !finished
}

/// A seeded value in [0, n).
fn draw(seed: u64, salt: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 29)) % n.max(1)
}

#[test]
fn s3_kill_9_during_the_sweep_then_a_rerun_reaches_the_clean_result() {
    Emulator::Moto.require();
    let (_dir, sc) = pushed(scenarios::mixed);
    let rt = runtime();
    let clean = s3_clean_result(&rt, &sc);
    let mut killed_mid_sweep = 0;
    for seed in 0..4u64 {
        let root = Emulator::unique_root("faults-kill");
        rt.block_on(Emulator::Moto.upload_tree(&sc.root, &root));
        let before = rt.block_on(Emulator::Moto.keys(&root));
        // 150 ms per request: each delete phase is one DeleteObjects request in
        // flight long enough to be killed during it, or between two of them
        let proxy = Proxy::start(&["--latency-ms", "150"].map(String::from));
        let cache = tempfile::tempdir().unwrap();
        let args = s3_args(&proxy.endpoint(), &root, cache.path());
        let child = Command::new(binary())
            .args(&args)
            .env_remove("REGISTRY_GC_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let after_batches = draw(seed, 1, 3);
        let delay = Duration::from_millis(draw(seed, 2, 200));
        let deletes = || {
            proxy.counts()["requests"]["DELETE_BATCH"]
                .as_u64()
                .unwrap_or(0)
        };
        let killed = kill_when(
            child,
            || deletes() > after_batches,
            delay,
            Duration::from_secs(120),
        );
        let what = format!("seed {seed}: killed after {after_batches} delete requests + {delay:?}");
        let after = rt.block_on(Emulator::Moto.keys(&root));
        let lost: Vec<_> = clean.difference(&after).collect();
        assert!(
            lost.is_empty(),
            "{what}: deleted what a clean run keeps: {lost:#?}"
        );
        killed_mid_sweep += (killed && after != before && after != clean) as u32;
        drop(proxy);
        let rerun = run_s3(&Emulator::Moto.endpoint(), &root);
        assert_eq!(
            rerun.status.code(),
            Some(0),
            "{what}: rerun: {}",
            show(&rerun)
        );
        assert_same(
            &rt.block_on(Emulator::Moto.keys(&root)),
            &clean,
            &format!("{what}: after the rerun"),
        );
        if seed % 2 == 0 {
            pull_survivors_through_s3(&sc, &root, &what);
        }
    }
    assert!(killed_mid_sweep >= 1, "no kill landed inside the sweep");
}

/// On disk the sweep is fast: the tree gets 4000 extra orphan blobs, so that
/// deleting them takes long enough to be interrupted, and the kill points are
/// spread over the whole run (listing, marking and sweeping) by a seeded share
/// of a clean run's duration.
#[test]
fn filesystem_kill_9_at_random_points_then_a_rerun_reaches_the_clean_result() {
    let (_dir, sc) = pushed(scenarios::mixed);
    let orphans = 4000;
    let with_orphans = |root: &Path| {
        for i in 0..orphans {
            tree::write_blob(root, format!("orphan {i}").as_bytes());
        }
        tree::age_tree(root, Duration::from_secs(2 * 3600));
    };
    // thousands of orphans: far past the guard's share
    let flags = [
        "--delete-untagged",
        "--upload-max-age",
        "1h",
        "--quiet",
        "--force",
    ];
    let clean_copy = aged_copy(&sc);
    with_orphans(clean_copy.path());
    let before_n = tree::keys(clean_copy.path()).len();
    let t0 = Instant::now();
    gc(clean_copy.path(), &flags, 0);
    let duration = t0.elapsed();
    let clean = tree::keys(clean_copy.path());
    assert!(before_n - clean.len() > orphans);

    let seeds = 8u64;
    let (mut mid_sweep, mut pulled) = (0, 0);
    for seed in 0..seeds {
        let copy = aged_copy(&sc);
        with_orphans(copy.path());
        let mut args: Vec<String> = vec!["gc".into()];
        args.extend(flags.map(String::from));
        args.push(copy.path().display().to_string());
        let child = Command::new(binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // stratified: seed i kills somewhere in the i-th eighth of a clean run
        let at =
            duration.mul_f64((seed as f64 + draw(seed, 3, 1000) as f64 / 1000.0) / seeds as f64);
        let killed = kill_when(child, || true, at, duration * 4);
        let what = format!("seed {seed}: killed {at:?} into a run of about {duration:?}");
        let after = tree::keys(copy.path());
        let lost: Vec<_> = clean.difference(&after).collect();
        assert!(
            lost.is_empty(),
            "{what}: deleted what a clean run keeps: {lost:#?}"
        );
        mid_sweep += (killed && after.len() != before_n && after != clean) as u32;
        if killed && pulled < 2 && after.len() != before_n {
            // a registry interrupted mid-sweep still serves every survivor
            let reg = Registry::start(copy.path());
            sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
                .unwrap_or_else(|e| panic!("{what}: before the rerun: {e}"));
            pulled += 1;
        }
        gc(copy.path(), &flags, 0);
        assert_same(
            &tree::keys(copy.path()),
            &clean,
            &format!("{what}: after the rerun"),
        );
        if seed % 3 == 0 {
            let reg = Registry::start(copy.path());
            sc.pull_verify_survivors(reg.url(), Mode::DeleteUntagged)
                .unwrap_or_else(|e| panic!("{what}: after the rerun: {e}"));
        }
    }
    assert!(
        mid_sweep >= 1,
        "no kill of {seeds} landed inside the sweep (a clean run takes {duration:?})"
    );
}
