//! S3 credentials from AWS shared config profiles (the aws-profile feature), run
//! end to end: the real binary against moto, with every `AWS_*` variable of the
//! test's own environment removed from the binary's, and the config and
//! credentials files in a temporary directory, so that the profile is the only
//! place credentials can come from.
//!
//! moto takes any key pair, so what proves the profile supplies the credentials
//! is observable elsewhere: a `credential_process` script counts its calls in a
//! file, and the same run without a profile finds no credentials at all.
#![cfg(feature = "aws-profile")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_types::os_shim_internal::Env;
use common::cloud::Emulator;
use common::collector::{binary, read_report};
use common::tree;
use registry_gc::storage::aws_profile::{read_profile, ProfileChoice, ProfileError};

/// A registry tree the real registry wrote (distribution 2.8.2).
fn sample_registry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-registry")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh root in moto holding a copy of the sample registry; returns it and
/// its keys.
fn seeded(test: &str) -> (String, BTreeSet<String>) {
    Emulator::Moto.require();
    let rt = runtime();
    let root = Emulator::unique_root(test);
    let n = rt.block_on(Emulator::Moto.upload_tree(&sample_registry(), &root));
    let keys = rt.block_on(Emulator::Moto.keys(&root));
    assert_eq!(keys.len(), n);
    (root, keys)
}

fn keys(root: &str) -> BTreeSet<String> {
    runtime().block_on(Emulator::Moto.keys(root))
}

/// Expirations a `credential_process` can report.
const FAR_FUTURE: &str = "2100-01-01T00:00:00Z";
const LONG_EXPIRED: &str = "2000-01-01T00:00:00Z";

/// `~/.aws/config` and `~/.aws/credentials` in a temporary home, with scripts
/// for `credential_process` beside them.
struct AwsHome {
    dir: tempfile::TempDir,
}

impl AwsHome {
    fn new() -> AwsHome {
        let dir = tempfile::Builder::new()
            .prefix("aws-profile-")
            .tempdir()
            .unwrap();
        let home = AwsHome { dir };
        std::fs::write(
            home.credentials(),
            "[static]\naws_access_key_id = profile-key\naws_secret_access_key = profile-secret\n",
        )
        .unwrap();
        let config = format!(
            "[profile static]\nregion = eu-west-3\n\n\
             [profile process]\ncredential_process = {}\n\n\
             [profile expired]\ncredential_process = {}\n\n\
             [profile broken]\ncredential_process = {}\n\n\
             [profile admin]\nrole_arn = arn:aws:iam::123456789012:role/registry-gc\nsource_profile = process\n",
            home.script("process", &credential_json(FAR_FUTURE)).display(),
            home.script("expired", &credential_json(LONG_EXPIRED)).display(),
            home.failing_script("broken", "token service unavailable").display(),
        );
        std::fs::write(home.config(), config).unwrap();
        home
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// The file where the script `name` adds a line each time it is run.
    fn calls_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.calls"))
    }

    fn calls(&self, name: &str) -> usize {
        std::fs::read_to_string(self.calls_file(name))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// A `credential_process` that records its call and prints `json`.
    fn script(&self, name: &str, json: &str) -> PathBuf {
        let body = format!(
            "#!/bin/sh\necho called >> '{}'\nprintf '%s\\n' '{json}'\n",
            self.calls_file(name).display()
        );
        self.write_script(name, &body)
    }

    /// A `credential_process` that fails the way a broken token helper does.
    fn failing_script(&self, name: &str, message: &str) -> PathBuf {
        let body = format!(
            "#!/bin/sh\necho called >> '{}'\necho '{message}' >&2\nexit 3\n",
            self.calls_file(name).display()
        );
        self.write_script(name, &body)
    }

    fn write_script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(format!("{name}.sh"));
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs `registry-gc <args> --endpoint MOTO --allow-http s3://BUCKET/root`
    /// with none of the test's `AWS_*` variables: only the profile files, a
    /// metadata endpoint where nothing answers, and `extra_env`.
    fn run(&self, args: &[&str], root: &str, extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(binary());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(&name);
            }
        }
        cmd.args(args)
            .args([
                "--endpoint",
                &Emulator::Moto.endpoint(),
                "--allow-http",
                &Emulator::Moto.url(root),
            ])
            .env_remove("REGISTRY_GC_LOG")
            // nothing of the machine's own ~/.aws is read
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("AWS_CONFIG_FILE", self.config())
            .env("AWS_SHARED_CREDENTIALS_FILE", self.credentials())
            // object_store's last resort, the instance metadata service, is asked
            // here on loopback, where nothing answers, instead of 169.254.169.254
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
        cmd.envs(extra_env.iter().copied());
        cmd.output().expect("run registry-gc")
    }
}

fn credential_json(expiration: &str) -> String {
    format!(
        r#"{{"Version":1,"AccessKeyId":"process-key","SecretAccessKey":"process-secret","SessionToken":"process-token","Expiration":"{expiration}"}}"#
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Flags of a collection on a tree uploaded moments ago (object stores cannot
/// back-date last-modified); the sample is mostly garbage, past the guard.
const COLLECT: &[&str] = &[
    "gc",
    "--delete-untagged",
    "--min-age",
    "0s",
    "--upload-max-age",
    "0s",
    "--force",
    "--no-cache",
];

/// What the same collection leaves of the sample registry on disk.
fn filesystem_result() -> BTreeSet<String> {
    let copy = tempfile::tempdir().unwrap();
    tree::copy_tree(&sample_registry(), copy.path());
    tree::age_tree(copy.path(), std::time::Duration::from_secs(60));
    let out = common::collector::gc(copy.path(), &COLLECT[1..], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted"));
    tree::keys(copy.path())
}

#[test]
fn static_keys_of_a_profile_in_the_credentials_file_are_used_with_its_region() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-static");

    // without a profile object_store's chain finds no credentials and falls
    // back to the instance metadata service (where nothing answers)
    let out = home.run(&["du"], &root, &[]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("http://127.0.0.1:9/latest/api/token"),
        "{}",
        stderr(&out)
    );

    let out = home.run(
        &["-v", "--log-format", "json", "du", "--profile", "static"],
        &root,
        &[],
    );
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("blobs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // no --region, AWS_REGION or [s3] region: the profile's
    assert!(
        stderr(&out).contains(r#""region":"eu-west-3""#),
        "{}",
        stderr(&out)
    );
    assert_eq!(keys(&root), before);
}

#[test]
fn credential_process_supplies_the_credentials_of_a_whole_collection_once() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-process");
    let expected = filesystem_result();
    assert!(
        expected.len() < before.len(),
        "the sample has garbage to collect"
    );

    let report = home.dir.path().join("report.json");
    let mut args = COLLECT.to_vec();
    args.extend([
        "--profile",
        "process",
        "--region",
        "us-east-1",
        "--report",
        report.to_str().unwrap(),
    ]);
    let out = home.run(&args, &root, &[]);
    assert_exit(&out, 0);
    assert_eq!(
        keys(&root),
        expected,
        "the collection left what the same run leaves on disk"
    );
    let r = read_report(&report);
    let requests: u64 = ["list", "get", "delete"]
        .iter()
        .map(|c| r["requests"][c].as_u64().unwrap())
        .sum();
    assert!(requests > 10, "{r}");
    // aws-config runs the process on every call: the bridge keeps credentials
    // that are far from expiry for the whole run
    assert_eq!(home.calls("process"), 1);
}

#[test]
fn expired_credentials_are_fetched_again_instead_of_reused() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-expired");
    let report = home.dir.path().join("report.json");
    let out = home.run(
        &[
            "gc",
            "--dry-run",
            "--no-cache",
            "--profile",
            "expired",
            "--report",
            report.to_str().unwrap(),
        ],
        &root,
        &[],
    );
    assert_exit(&out, 0);
    let r = read_report(&report);
    let requests: u64 = ["list", "get"]
        .iter()
        .map(|c| r["requests"][c].as_u64().unwrap())
        .sum();
    // one fetch for each signed request
    assert!(
        home.calls("expired") as u64 >= requests && requests > 1,
        "{} calls for {r}",
        home.calls("expired")
    );
    assert_eq!(keys(&root), before);
}

#[test]
fn assume_role_asks_sts_with_the_source_profiles_credentials() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-assume-role");
    // moto answers STS on the same endpoint as S3
    let out = home.run(
        &["du", "--profile", "admin", "--region", "us-east-1"],
        &root,
        &[("AWS_ENDPOINT_URL_STS", &Emulator::Moto.endpoint())],
    );
    assert_exit(&out, 0);
    assert_eq!(
        home.calls("process"),
        1,
        "the source profile's credentials sign the AssumeRole call"
    );

    // with no STS to answer, the role's credentials cannot be had
    let out = home.run(
        &["du", "--profile", "admin", "--region", "us-east-1"],
        &root,
        &[("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")],
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("AWS profile \"admin\" gave no credentials"),
        "{}",
        stderr(&out)
    );
    assert_eq!(keys(&root), before);
}

#[test]
fn aws_profile_in_the_environment_selects_the_profile() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-env");
    let out = home.run(
        &["du", "--region", "us-east-1"],
        &root,
        &[("AWS_PROFILE", "process")],
    );
    assert_exit(&out, 0);
    assert_eq!(home.calls("process"), 1);
    assert_eq!(keys(&root), before);
}

#[test]
fn an_unknown_profile_is_a_usage_error_naming_it_and_nothing_is_deleted() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-unknown");
    let mut args = COLLECT.to_vec();
    args.extend(["--profile", "no-such-profile"]);
    let out = home.run(&args, &root, &[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("--profile") && err.contains("\"no-such-profile\" is not defined"),
        "{err}"
    );
    assert!(
        err.contains(&home.config().display().to_string()),
        "the files read are named: {err}"
    );
    assert_eq!(keys(&root), before);

    // the same through AWS_PROFILE and the config file's [s3] section
    let out = home.run(
        &args[..args.len() - 2],
        &root,
        &[("AWS_PROFILE", "no-such-profile")],
    );
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("AWS_PROFILE: AWS profile \"no-such-profile\""),
        "{}",
        stderr(&out)
    );
    let config = home.dir.path().join("registry-gc.toml");
    std::fs::write(&config, "[s3]\nprofile = \"no-such-profile\"\n").unwrap();
    let mut with_config = args[..args.len() - 2].to_vec();
    with_config.extend(["--config", config.to_str().unwrap()]);
    let out = home.run(&with_config, &root, &[]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("[s3]: AWS profile \"no-such-profile\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(keys(&root), before);
}

#[test]
fn a_failing_credential_process_stops_the_run_naming_the_profile_and_nothing_is_deleted() {
    let home = AwsHome::new();
    let (root, before) = seeded("aws-profile-broken");
    let mut args = COLLECT.to_vec();
    args.extend(["--profile", "broken", "--region", "us-east-1"]);
    let out = home.run(&args, &root, &[]);
    // the project's code for a run stopped before the sweep (an access error)
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("AWS profile \"broken\" gave no credentials")
            && err.contains("token service unavailable"),
        "{err}"
    );
    assert!(home.calls("broken") >= 1);
    assert_eq!(keys(&root), before);
}

#[test]
fn a_profile_and_keys_in_the_settings_are_refused_together() {
    let home = AwsHome::new();
    let out = home.run(
        &["du", "--profile", "static", "-o", "access_key_id=other"],
        "never-opened",
        &[],
    );
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("--profile names an AWS profile and -o access_key_id gives S3 keys; keep one"),
        "{err}"
    );
}

#[test]
fn a_profile_is_read_from_the_files_the_environment_names() {
    let home = AwsHome::new();
    let (config, credentials) = (
        home.config().display().to_string(),
        home.credentials().display().to_string(),
    );
    let env = Env::from_slice(&[
        ("AWS_CONFIG_FILE", &config),
        ("AWS_SHARED_CREDENTIALS_FILE", &credentials),
    ]);
    let choice = |name: &str| ProfileChoice {
        name: name.into(),
        source: "--profile".into(),
    };

    let settings = read_profile(&choice("static"), &env).unwrap();
    assert_eq!(settings.region.as_deref(), Some("eu-west-3"));
    assert!(!settings.uses_sso);
    assert_eq!(read_profile(&choice("process"), &env).unwrap().region, None);
    match read_profile(&choice("nope"), &env) {
        Err(e @ ProfileError::Unknown { .. }) => assert!(e.to_string().contains(&config), "{e}"),
        other => panic!("{other:?}"),
    }

    std::fs::write(home.config(), "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n\n[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = ReadOnly\nregion = eu-central-1\n").unwrap();
    let dev = read_profile(&choice("dev"), &env).unwrap();
    assert!(dev.uses_sso);
    assert_eq!(dev.region.as_deref(), Some("eu-central-1"));
}

/// IAM Identity Center's portal, as far as `GetRoleCredentials` goes: a small
/// HTTP server on loopback that logs each request's role, account and bearer
/// token, answers the token `VALID_SSO_TOKEN` with role credentials, and any
/// other with the portal's 401.
struct SsoPortal {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

const VALID_SSO_TOKEN: &str = "cached-sso-access-token";
const SSO_START_URL: &str = "https://registry-gc-test.awsapps.com/start";
/// The token cache's file name for `SSO_START_URL`: the hex SHA-1 of the URL
/// (`printf %s URL | sha1sum`), as `aws sso login` names it.
const SSO_TOKEN_FILE: &str = "2b03d0929ab81cd097db38dc9d5aae59efe058f0.json";

const SSO_PORTAL_PY: &str = r#"
import json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port_file, log_file, valid = sys.argv[1:4]
class Portal(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        token = self.headers.get("x-amz-sso_bearer_token", "")
        with open(log_file, "a") as log:
            log.write("%s %s %s %s\n" % (url.path, q.get("role_name", [""])[0], q.get("account_id", [""])[0], token))
        if url.path == "/federation/credentials" and token == valid:
            status, body, kind = 200, {"roleCredentials": {"accessKeyId": "sso-key", "secretAccessKey": "sso-secret",
                "sessionToken": "sso-session", "expiration": 4102444800000}}, None
        else:
            status, body, kind = 401, {"message": "Session token not found or invalid"}, "UnauthorizedException"
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if kind:
            self.send_header("x-amzn-ErrorType", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

impl SsoPortal {
    fn start(dir: &Path) -> SsoPortal {
        let (port_file, log) = (dir.join("sso-portal.port"), dir.join("sso-portal.log"));
        let child = Command::new("python3")
            .args(["-c", SSO_PORTAL_PY])
            .args([&port_file, &log])
            .arg(VALID_SSO_TOKEN)
            .spawn()
            .expect("python3 starts the fake SSO portal");
        // dropped (and the server killed) if it never says its port
        let mut portal = SsoPortal {
            child,
            port: 0,
            log,
        };
        for _ in 0..200 {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                portal.port = port.trim().parse().expect("a port number");
                return portal;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the fake SSO portal did not start");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests so far: "path role account token", one per line.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().map(String::from).collect())
            .unwrap_or_default()
    }
}

impl Drop for SsoPortal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AwsHome {
    /// Adds an IAM Identity Center profile `sso` (the start-URL form) and
    /// puts `token` in the token cache where `aws sso login` leaves it.
    fn with_sso_profile(&self, token: Option<&str>) {
        let mut config = std::fs::read_to_string(self.config()).unwrap();
        if !config.contains("[profile sso]") {
            config.push_str(&format!(
                "\n[profile sso]\nsso_start_url = {SSO_START_URL}\nsso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = RegistryGc\n"
            ));
            std::fs::write(self.config(), config).unwrap();
        }
        let cache = self.dir.path().join(".aws/sso/cache");
        std::fs::create_dir_all(&cache).unwrap();
        let file = cache.join(SSO_TOKEN_FILE);
        match token {
            Some(token) => std::fs::write(
                file,
                format!(r#"{{"startUrl":"{SSO_START_URL}","region":"us-east-1","accessToken":"{token}","expiresAt":"{FAR_FUTURE}"}}"#),
            )
            .unwrap(),
            None => {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

#[test]
fn an_sso_profile_gets_role_credentials_from_the_portal_with_the_cached_token() {
    let home = AwsHome::new();
    let portal = SsoPortal::start(home.dir.path());
    let (root, before) = seeded("aws-profile-sso");
    let endpoint = portal.endpoint();
    let env = [("AWS_ENDPOINT_URL_SSO", endpoint.as_str())];

    home.with_sso_profile(Some(VALID_SSO_TOKEN));
    let out = home.run(
        &["du", "--profile", "sso", "--region", "us-east-1"],
        &root,
        &env,
    );
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("blobs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // one GetRoleCredentials for the whole run, for the profile's role and
    // account, with the token `aws sso login` cached
    assert_eq!(
        portal.requests(),
        [format!(
            "/federation/credentials RegistryGc 123456789012 {VALID_SSO_TOKEN}"
        )]
    );

    // a token the portal no longer accepts: no credentials, the run stops
    // before anything is read, and the message says what to do
    home.with_sso_profile(Some("revoked-token"));
    let out = home.run(
        &["du", "--profile", "sso", "--region", "us-east-1"],
        &root,
        &env,
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("AWS profile \"sso\" gave no credentials")
            && err.contains("run `aws sso login --profile sso` first"),
        "{err}"
    );
    assert_eq!(portal.requests().len(), 2);

    // never logged in: no cached token at all, and the portal is not asked
    home.with_sso_profile(None);
    let mut args = COLLECT.to_vec();
    args.extend(["--profile", "sso", "--region", "us-east-1"]);
    let out = home.run(&args, &root, &env);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("run `aws sso login --profile sso` first"),
        "{}",
        stderr(&out)
    );
    assert_eq!(portal.requests().len(), 2);
    assert_eq!(keys(&root), before, "nothing deleted without credentials");
}
