//! The storage conformance suite on every object store backend, each against its
//! emulator on 127.0.0.1 (started by `backends/setup-all.sh`; LocalStack by
//! `localstack/run-tests.sh`, which runs the ignored tests below).

mod common;
mod conformance;

use futures::StreamExt;
use std::sync::Arc;

use common::cloud::Emulator;
use object_store::ObjectStore;
use registry_gc::storage::open::open_storage;

struct BucketSeeder {
    emulator: Emulator,
    store: Arc<dyn ObjectStore>,
    root: String,
}

#[async_trait::async_trait]
impl conformance::Seeder for BucketSeeder {
    async fn put(&self, key: &str, bytes: &[u8]) {
        self.emulator
            .put(self.store.as_ref(), &format!("{}/{key}", self.root), bytes)
            .await;
    }

    fn takes_writes(&self) -> bool {
        self.emulator != Emulator::FakeGcs
    }

    async fn put_directory_marker(&self, key: &str) -> bool {
        self.emulator
            .put_directory_marker(&format!("{}/{key}", self.root))
            .await
    }
}

async fn conformance_on(emulator: Emulator) {
    emulator.require();
    let root = Emulator::unique_root("conformance");
    let storage = open_storage(&emulator.url(&root), &emulator.backend_options()).unwrap();
    let seeder = BucketSeeder {
        emulator,
        store: emulator.store(),
        root,
    };
    conformance::run(storage.as_ref(), &seeder).await;
    let counts = storage.counts().totals();
    assert!(
        counts.list > 0 && counts.get > 0 && counts.delete > 0,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_moto() {
    conformance_on(Emulator::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_azurite() {
    conformance_on(Emulator::Azurite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_fake_gcs() {
    conformance_on(Emulator::FakeGcs).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "LocalStack runs outside CI: localstack/run-tests.sh"]
async fn conformance_localstack() {
    conformance_on(Emulator::LocalStack).await;
}

/// The example configs in backends/ are valid: every key is one the backend takes.
#[test]
fn example_configs_open() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for backend in ["s3", "azure", "gcs"] {
        let path = root.join("backends").join(backend).join("example.toml");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry-gc"))
            .args([
                "gc",
                "--dry-run",
                "--config",
                path.to_str().unwrap(),
                "--endpoint",
                "http://127.0.0.1:9",
            ])
            .args(
                ["-o", "access_key_id=x", "-o", "secret_access_key=y"]
                    .iter()
                    .filter(|_| backend == "s3"),
            )
            .env("AZURE_STORAGE_ACCOUNT_KEY", common::cloud::AZURITE_KEY)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // the config is accepted and the backend built: the run fails only at the
        // first request, on the unreachable endpoint
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert!(
            stderr.contains("cannot reach") && stderr.contains("127.0.0.1:9"),
            "{backend}: {stderr}"
        );
    }
}

/// A delete in a bucket or container that does not exist fails for every key,
/// whatever the batch size: the request's own "not found" (no such bucket) is
/// not a key's "not found", which counts as done.
async fn deletes_in_a_missing_bucket_fail(emulator: Emulator) {
    emulator.require();
    let url = match emulator {
        Emulator::Azurite => "az://rg-no-such-container/r",
        _ => "s3://rg-no-such-bucket/r",
    };
    let storage = open_storage(url, &emulator.backend_options()).unwrap();
    for n in [1, 2] {
        let keys: Vec<String> = (0..n)
            .map(|i| format!("docker/registry/v2/blobs/k{i}"))
            .collect();
        let results = storage.delete_batch(&keys).await;
        assert_eq!(results.len(), n, "{}", emulator.name());
        for r in &results {
            let err = r.as_ref().err().unwrap_or_else(|| {
                panic!(
                    "{}: {n} keys: reported deleted: {results:?}",
                    emulator.name()
                )
            });
            assert!(
                err.to_string().contains("does not exist"),
                "{}: {err}",
                emulator.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_in_a_missing_bucket_fail_moto() {
    deletes_in_a_missing_bucket_fail(Emulator::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_in_a_missing_bucket_fail_azurite() {
    deletes_in_a_missing_bucket_fail(Emulator::Azurite).await;
}

/// A key already gone counts as deleted, whatever it is named: a tag
/// called `NoSuchBucket` (tags may be upper case) is not a missing bucket,
/// though the error text holds the key.
async fn a_gone_key_named_like_an_error_code_counts_as_deleted(emulator: Emulator) {
    emulator.require();
    let root = Emulator::unique_root("gone-named-like-a-code");
    let storage = open_storage(&emulator.url(&root), &emulator.backend_options()).unwrap();
    for tag in ["plain", "NoSuchBucket", "ContainerNotFound"] {
        let key = format!("docker/registry/v2/repositories/app/_manifests/tags/{tag}/current/link");
        let results = storage.delete_batch(std::slice::from_ref(&key)).await;
        assert!(
            results[0].is_ok(),
            "{}: {key} was already gone, and its delete failed: {:?}",
            emulator.name(),
            results[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_key_named_like_an_error_code_counts_as_deleted_gcs() {
    a_gone_key_named_like_an_error_code_counts_as_deleted(Emulator::FakeGcs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_key_named_like_an_error_code_counts_as_deleted_azurite() {
    a_gone_key_named_like_an_error_code_counts_as_deleted(Emulator::Azurite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_key_named_like_an_error_code_counts_as_deleted_moto() {
    a_gone_key_named_like_an_error_code_counts_as_deleted(Emulator::Moto).await;
}

/// A server on 127.0.0.1 that answers every request with a 404 and `body`.
fn answering_404(body: &'static str) -> String {
    answering("404 Not Found", body)
}

/// A server on 127.0.0.1 that answers every request with `status` and `body`.
fn answering(status: &'static str, body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // the headers, then as much of a body as Content-Length says
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

/// fake-gcs-server answers a delete in a missing bucket as it answers one of
/// a missing object; Google Cloud Storage says `NoSuchBucket`, as here.
#[tokio::test(flavor = "multi_thread")]
async fn a_gcs_delete_in_a_missing_bucket_fails() {
    let endpoint = answering_404(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>",
    );
    let mut options = registry_gc::config::BackendOptions::default();
    options.push("endpoint", &endpoint, "--endpoint");
    options.push("allow_http", "true", "--allow-http");
    options.push("bearer_token", "t", "-o");
    let storage = open_storage("gs://gone/r", &options).unwrap();
    let results = storage
        .delete_batch(&["docker/registry/v2/a".to_string()])
        .await;
    let err = results[0].as_ref().expect_err("reported deleted");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// S3 reports a missing key as deleted, so a 404 is always the request's,
/// whatever its body says (here a proxy's, without an S3 error code).
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_delete_answered_404_fails() {
    let endpoint = answering_404("<html>not here</html>");
    let mut options = registry_gc::config::BackendOptions::default();
    options.push("endpoint", &endpoint, "--endpoint");
    options.push("allow_http", "true", "--allow-http");
    options.push("region", "us-east-1", "--region");
    options.push("access_key_id", "k", "-o");
    options.push("secret_access_key", "s", "-o");
    let storage = open_storage("s3://b/r", &options).unwrap();
    for n in [1, 2] {
        let keys: Vec<String> = (0..n).map(|i| format!("docker/registry/v2/k{i}")).collect();
        let results = storage.delete_batch(&keys).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| !e.is_not_found())),
            "{n} keys: {results:?}"
        );
    }
}

/// An error names the key, then where it is (bucket, root, endpoint): never
/// the endpoint with the key glued on, which reads as the object's URL and
/// leaves out the bucket and the root.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_names_the_key_and_where_it_is() {
    let endpoint = answering(
        "400 Bad Request",
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidRequest</Code><Message>no</Message></Error>",
    );
    let mut options = registry_gc::config::BackendOptions::default();
    options.push("endpoint", &endpoint, "--endpoint");
    options.push("allow_http", "true", "--allow-http");
    options.push("region", "us-east-1", "--region");
    options.push("access_key_id", "k", "-o");
    options.push("secret_access_key", "s", "-o");
    let storage = open_storage("s3://b/reg", &options).unwrap();
    let err = storage
        .get("docker/registry/v2/x", 100)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "docker/registry/v2/x (in s3://b/reg at {endpoint}): "
        )),
        "{err}"
    );
    assert!(!err.contains(&format!("{endpoint}/docker")), "{err}");
}

/// A listing whose last page is exactly full is checked with one request
/// more (for a key after the page's last, which a store that knows only
/// ListObjects version 1 would answer; `faults_e2e` has that store): on a
/// store that follows ListObjectsV2 the check finds nothing, and the listing,
/// flat or by directory, is whole. A last page with room left costs nothing
/// more.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_last_page_costs_one_check_and_lists_everything_moto() {
    let emulator = Emulator::Moto;
    emulator.require();
    let store = emulator.store();
    for (keys, extra_requests) in [(10, 1), (11, 0)] {
        let root = Emulator::unique_root("full-last-page");
        for i in 0..keys {
            let key = format!("{root}/p/k{i:02}");
            emulator.put(store.as_ref(), &key, b"x").await;
        }
        let mut options = emulator.backend_options();
        options.push("list_page_size", "5", "-o");
        let storage = open_storage(&emulator.url(&root), &options).unwrap();

        let before = storage.counts().totals().list;
        let listed: Vec<_> = storage
            .list("p/")
            .map(|m| m.unwrap().key)
            .collect::<Vec<_>>()
            .await;
        assert_eq!(listed.len(), keys, "{listed:?}");
        let pages = keys.div_ceil(5) as u64;
        assert_eq!(
            storage.counts().totals().list - before,
            pages + extra_requests,
            "{keys} keys, flat"
        );

        // by directory: the page's last entries are keys here, and with 10
        // directories of one key each, common prefixes
        let dir = storage.list_dir("p/").await.unwrap();
        assert_eq!(dir.objects.len(), keys);
        for i in 0..keys {
            let key = format!("{root}/q/d{i:02}/k");
            emulator.put(store.as_ref(), &key, b"x").await;
        }
        let before = storage.counts().totals().list;
        let dir = storage.list_dir("q/").await.unwrap();
        assert_eq!(dir.prefixes.len(), keys, "{:?}", dir.prefixes);
        assert_eq!(
            storage.counts().totals().list - before,
            pages + extra_requests,
            "{keys} directories"
        );
    }
}

/// A plain-http endpoint without `--allow-http` fails every request as
/// "builder error" inside object_store; the message says what to add, on
/// each service.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_endpoint_without_allow_http_says_to_allow_it() {
    for (url, keys) in [
        (
            "s3://b/reg",
            &[
                ("access_key_id", "k"),
                ("secret_access_key", "s"),
                ("region", "us-east-1"),
            ][..],
        ),
        (
            "az://c/reg",
            &[("account_name", "acct"), ("access_key", "a2V5")][..],
        ),
    ] {
        let mut options = registry_gc::config::BackendOptions::default();
        options.push("endpoint", "http://127.0.0.1:9", "--endpoint");
        for (k, v) in keys {
            options.push(k, v, "-o");
        }
        let storage = open_storage(url, &options).unwrap();
        let err = storage
            .list_dir("docker/registry/v2/")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain http") && err.contains("--allow-http"),
            "{url}: {err}"
        );
    }
}

/// A failure that has nothing to do with credentials was reported as "no
/// usable credentials" when the key (a repository's name) or the bucket
/// held the word `metadata` or `credential`: they are in the request's URL.
#[tokio::test(flavor = "multi_thread")]
async fn a_repository_named_metadata_is_not_a_credential_failure() {
    let endpoint = answering(
        "400 Bad Request",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidArgument</Code><Message>Invalid argument.</Message></Error>",
    );
    let mut options = registry_gc::config::BackendOptions::default();
    options.push("endpoint", &endpoint, "--endpoint");
    options.push("allow_http", "true", "--allow-http");
    options.push("region", "us-east-1", "--region");
    options.push("access_key_id", "test", "-o");
    options.push("secret_access_key", "test", "-o");
    let storage = open_storage("s3://credential-bucket/r", &options).unwrap();
    for repository in ["billing-api", "metadata-api", "credentials", "AccessDenied"] {
        let err = storage
            .get(
                &format!("docker/registry/v2/repositories/ml/{repository}/_manifests/tags/v1/current/link"),
                1024,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("no usable credentials"), "{err}");
        assert!(!err.contains("credentials are taken from"), "{err}");
    }
}
