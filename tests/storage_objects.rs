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
use registry_gc::storage::Storage as _;

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
    for tag in [
        "plain",
        "NoSuchBucket",
        "ContainerNotFound",
        "SlowDown",
        "InternalError",
    ] {
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
    serving(status, "application/xml", body)
}

/// A server on 127.0.0.1 that answers every request with `status`, a body of
/// `content_type` and `body`.
fn serving(status: &'static str, content_type: &'static str, body: &'static str) -> String {
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
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    let storage = open_storage("s3://b/r", &options_at("s3", &endpoint)).unwrap();
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
    let storage = open_storage("s3://b/reg", &options_at("s3", &endpoint)).unwrap();
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
    let storage = open_storage("s3://credential-bucket/r", &options_at("s3", &endpoint)).unwrap();
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

/// Keys named like an error code that object_store retries when an S3
/// answer holds it (`SlowDown`, `InternalError`; tags may be named so) are
/// deleted with the keys beside them, at once: DeleteObjects names every key
/// it deleted in its answer, which object_store took for an error, retried
/// for as long as its retries last, then failed for every key of the
/// request (deleted, all of them).
#[tokio::test(flavor = "multi_thread")]
async fn keys_named_like_a_retried_error_code_are_deleted_with_their_batch_moto() {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("named-like-slowdown");
    let store = emulator.store();
    let keys: Vec<String> = ["v1", "SlowDown", "InternalError-fix", "v2"]
        .iter()
        .map(|t| format!("docker/registry/v2/repositories/app/_manifests/tags/{t}/current/link"))
        .collect();
    for key in &keys {
        emulator
            .put(store.as_ref(), &format!("{root}/{key}"), b"sha256:x")
            .await;
    }
    let storage = open_storage(&emulator.url(&root), &emulator.backend_options()).unwrap();
    let started = std::time::Instant::now();
    let results = storage.delete_batch(&keys).await;
    assert!(results.iter().all(Result::is_ok), "{results:#?}");
    assert!(emulator.keys(&root).await.is_empty(), "keys left");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "retried for {:?}",
        started.elapsed()
    );
}

/// With `-o disable_bulk_delete=true` (an S3-compatible store without
/// DeleteObjects) each key is a DELETE request of its own, and the request
/// counts (the report's, the summary's) say so: they counted one request per
/// 1,000 keys, as for DeleteObjects.
#[tokio::test(flavor = "multi_thread")]
async fn single_deletes_are_counted_a_request_each_moto() {
    let emulator = Emulator::Moto;
    emulator.require();
    let store = emulator.store();
    for (disable, requests) in [(false, 1), (true, 5)] {
        let root = Emulator::unique_root("single-deletes");
        let keys: Vec<String> = (0..5)
            .map(|i| format!("docker/registry/v2/blobs/sha256/a{i}/a{i}/data"))
            .collect();
        for key in &keys {
            emulator
                .put(store.as_ref(), &format!("{root}/{key}"), b"x")
                .await;
        }
        let mut options = emulator.backend_options();
        if disable {
            options.push("disable_bulk_delete", "true", "-o");
        }
        let storage = open_storage(&emulator.url(&root), &options).unwrap();
        let results = storage.delete_batch(&keys).await;
        assert!(results.iter().all(Result::is_ok), "{results:#?}");
        assert!(emulator.keys(&root).await.is_empty(), "keys left");
        assert_eq!(
            storage.counts().totals().delete,
            requests,
            "disable_bulk_delete={disable}"
        );
    }
}

/// A DeleteObjects request refused as a whole (403: a clock skewed past
/// what S3 accepts, a revoked key, a policy that denies the POST) fails
/// each of its keys, each failure naming its own key: object_store names
/// every key of the request in the error, and each of a thousand failures
/// repeated a thousand keys (some 100 MB in the summary and the report).
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_delete_refused_as_a_whole_names_each_key_once() {
    let endpoint = answering(
        "403 Forbidden",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    );
    let storage = open_storage("s3://b/r", &options_at("s3", &endpoint)).unwrap();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("docker/registry/v2/blobs/sha256/k{i:03}/data"))
        .collect();
    let results = storage.delete_batch(&keys).await;
    assert_eq!(results.len(), keys.len());
    for (key, r) in keys.iter().zip(&results) {
        let err = r.as_ref().expect_err("reported deleted").to_string();
        assert!(err.contains("access denied"), "{err}");
        assert!(err.contains(key.as_str()), "{err}");
        assert_eq!(
            err.matches("docker/registry/v2/").count(),
            1,
            "names other keys: {} bytes",
            err.len()
        );
    }
}

/// Options for a store at `endpoint` that takes whatever is sent.
fn options_at(service: &str, endpoint: &str) -> registry_gc::config::BackendOptions {
    let mut options = registry_gc::config::BackendOptions::default();
    options.push("endpoint", endpoint, "--endpoint");
    options.push("allow_http", "true", "--allow-http");
    match service {
        "s3" => {
            options.push("region", "us-east-1", "--region");
            options.push("access_key_id", "k", "-o");
            options.push("secret_access_key", "s", "-o");
        }
        _ => {
            options.push("account_name", common::cloud::AZURITE_ACCOUNT, "-o");
            options.push("access_key", common::cloud::AZURITE_KEY, "-o");
        }
    }
    options
}

fn three_keys() -> Vec<String> {
    (0..3)
        .map(|i| {
            format!("docker/registry/v2/repositories/app/_manifests/revisions/sha256/{i}/link")
        })
        .collect()
}

/// A DeleteObjects answer that leaves keys out (a `DeleteResult` with fewer
/// entries than keys) was read as every key deleted: object_store starts from
/// "all deleted" and fills in the errors it finds. Nothing said those keys
/// went; they are failures. An `<Error>` for a key the request did not hold
/// panicked object_store's reader, ending the run with no report.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_delete_answer_that_leaves_keys_out_fails_them() {
    for body in [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult><Deleted><Key>r/docker/registry/v2/repositories/app/_manifests/revisions/sha256/0/link</Key></Deleted></DeleteResult>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult></DeleteResult>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult><Error><Key>r/other</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>",
    ] {
        let storage = open_storage("s3://b/r", &options_at("s3", &answering("200 OK", body))).unwrap();
        let results = tokio::spawn(async move { storage.delete_batch(&three_keys()).await })
            .await
            .unwrap_or_else(|e| panic!("{e}: answered {body}"));
        for r in &results[1..] {
            let err = r.as_ref().expect_err("reported deleted, unanswered");
            assert!(err.to_string().contains("does not account for"), "{err}");
        }
    }
}

/// The Blob Batch counterpart: an answer with fewer parts than deletes was
/// read as every delete done; a part whose `Content-ID` names no delete of
/// the request panicked object_store's reader.
#[tokio::test(flavor = "multi_thread")]
async fn an_azure_batch_answer_that_leaves_deletes_out_fails_them() {
    for body in [
        "--batchresponse_1\r\nContent-Type: application/http\r\nContent-ID: 0\r\n\r\nHTTP/1.1 202 Accepted\r\nx-ms-delete-type-permanent: true\r\nx-ms-request-id: 1\r\nx-ms-version: 2021-08-06\r\n\r\n--batchresponse_1--\r\n",
        "--batchresponse_1\r\nContent-Type: application/http\r\nContent-ID: 0\r\n\r\nHTTP/1.1 202 Accepted\r\nx-ms-request-id: 1\r\n\r\n--batchresponse_1\r\nContent-Type: application/http\r\nContent-ID: 1\r\n\r\nHTTP/1.1 202 Accepted\r\nx-ms-request-id: 2\r\n\r\n--batchresponse_1\r\nContent-Type: application/http\r\nContent-ID: 7\r\n\r\nHTTP/1.1 202 Accepted\r\nx-ms-request-id: 3\r\n\r\n--batchresponse_1--\r\n",
    ] {
        let endpoint = serving("202 Accepted", "multipart/mixed; boundary=batchresponse_1", body);
        let storage = open_storage("az://c/r", &options_at("azure", &endpoint)).unwrap();
        let results = tokio::spawn(async move { storage.delete_batch(&three_keys()).await })
            .await
            .unwrap_or_else(|e| panic!("{e}: answered {body}"));
        let err = results[2].as_ref().expect_err("reported deleted, unanswered");
        assert!(err.to_string().contains("does not account for"), "{err}");
    }
}

/// Each Blob Batch part is the delete its `Content-ID` names, in whatever
/// order the parts come: a 404 is done (gone already), a 409 or a 503 that
/// key's failure alone.
#[tokio::test(flavor = "multi_thread")]
async fn azure_batch_parts_are_attributed_by_content_id() {
    let part = |id: usize, status: &str| {
        format!("--batchresponse_1\r\nContent-Type: application/http\r\nContent-ID: {id}\r\n\r\nHTTP/1.1 {status}\r\nx-ms-request-id: {id}\r\n\r\n")
    };
    let body = format!(
        "{}{}{}{}--batchresponse_1--\r\n",
        part(3, "503 Server Busy"),
        part(1, "409 Conflict"),
        part(2, "202 Accepted"),
        part(0, "404 The specified blob does not exist.")
    );
    let endpoint = serving(
        "202 Accepted",
        "multipart/mixed; boundary=batchresponse_1",
        Box::leak(body.into_boxed_str()),
    );
    let storage = open_storage("az://c/r", &options_at("azure", &endpoint)).unwrap();
    let mut keys = three_keys();
    keys.push("docker/registry/v2/blobs/sha256/ab/ab/data".into());
    let results = storage.delete_batch(&keys).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:#?}");
    let conflict = results[1].as_ref().unwrap_err().to_string();
    assert!(
        conflict.contains("409") && conflict.contains("revisions/sha256/1/link"),
        "{conflict}"
    );
    let busy = results[3].as_ref().unwrap_err().to_string();
    assert!(
        busy.contains("503") && busy.contains("blobs/sha256/ab/ab/data"),
        "{busy}"
    );
}

/// S3 may answer a DeleteObjects request 200 with an `InternalError` (or
/// `SlowDown`) for one of its keys; object_store retries the whole request
/// for it, and once its retries are spent every key failed, though each
/// answer said the others were deleted: a thousand failures for one, and
/// the deleted keys left out of what the sweep did (and of the look after
/// it). Each key is as the last answer says.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_key_failing_inside_a_200_answer_fails_alone() {
    let endpoint = answering(
        "200 OK",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>\
         <Deleted><Key>r/docker/registry/v2/repositories/app/_manifests/revisions/sha256/0/link</Key></Deleted>\
         <Error><Key>r/docker/registry/v2/repositories/app/_manifests/revisions/sha256/1/link</Key><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>\
         <Deleted><Key>r/docker/registry/v2/repositories/app/_manifests/revisions/sha256/2/link</Key></Deleted>\
         </DeleteResult>",
    );
    let storage = open_storage("s3://b/r", &options_at("s3", &endpoint)).unwrap();
    let results = storage.delete_batch(&three_keys()).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:#?}");
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("InternalError") && err.contains("revisions/sha256/1/link"),
        "{err}"
    );
}

/// Keys with characters XML escapes (`&`, `<`, `>`, quotes; a name another
/// tool wrote) go into a DeleteObjects request escaped and come back
/// escaped in its answer: each is deleted, and each answer is matched to
/// its key.
#[tokio::test(flavor = "multi_thread")]
async fn keys_that_xml_escapes_are_deleted_and_answered_moto() {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("xml-escaped-keys");
    let store = emulator.store();
    let keys: Vec<String> = ["a&b", "<c>", "it's", "\"q\"", "&amp;", "plain"]
        .iter()
        .map(|t| format!("docker/registry/v2/repositories/app/_manifests/tags/{t}/current/link"))
        .collect();
    for key in &keys[..5] {
        // as named (`Path::from`, which the seeding helper uses, would
        // percent-encode `<`, `>` and `"`)
        let path = object_store::path::Path::parse(format!("{root}/{key}")).unwrap();
        object_store::ObjectStoreExt::put(store.as_ref(), &path, b"sha256:x".to_vec().into())
            .await
            .unwrap();
    }
    assert_eq!(emulator.keys(&root).await.len(), 5);
    let storage = open_storage(&emulator.url(&root), &emulator.backend_options()).unwrap();
    // the last is not there: deleted all the same
    let results = storage.delete_batch(&keys).await;
    assert!(results.iter().all(Result::is_ok), "{results:#?}");
    let left = emulator.keys(&root).await;
    assert!(left.is_empty(), "reported deleted, yet left: {left:#?}");
}

/// How `ScriptedS3` answers a write under `If-None-Match: *`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CreateAnswer {
    /// As S3 does.
    Honoured,
    /// Writes over what is there, as a store that drops the header does.
    Ignored,
    /// 501, as S3 did before 2024 and stores made like it still do.
    NotImplemented,
    /// Writes, then answers 412, as the retry of a write whose answer was
    /// lost does.
    LandedThenTaken,
}

/// An S3 store (moto) scripted for restores: it can move a tag, as a push
/// would, the first time the restore looks at one of `looked_at` (the write
/// lands after that look's answer and before anything the restore does
/// next), and answers conditional writes as `create` says.
#[derive(Debug)]
struct ScriptedS3 {
    inner: object_store::aws::AmazonS3,
    looked_at: Vec<object_store::path::Path>,
    tag: object_store::path::Path,
    moved: std::sync::atomic::AtomicBool,
    create: CreateAnswer,
}

impl std::fmt::Display for ScriptedS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScriptedS3({})", self.inner)
    }
}

const MOVED_TO: &[u8] = b"sha256:2222222222222222222222222222222222222222222222222222222222222222";
const OLD_TARGET: &[u8] =
    b"sha256:1111111111111111111111111111111111111111111111111111111111111111";
const TAG: &str = "docker/registry/v2/repositories/app/_manifests/tags/latest/current/link";

#[async_trait::async_trait]
impl ObjectStore for ScriptedS3 {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        mut opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if opts.mode == object_store::PutMode::Create {
            match self.create {
                CreateAnswer::Honoured => {}
                CreateAnswer::Ignored => opts.mode = object_store::PutMode::Overwrite,
                CreateAnswer::NotImplemented => {
                    return Err(object_store::Error::Generic {
                        store: "S3",
                        source: "Error performing PUT in 1ms - Server returned non-2xx status \
                                 code: 501 Not Implemented: <Error><Code>NotImplemented</Code>\
                                 </Error>"
                            .into(),
                    })
                }
                CreateAnswer::LandedThenTaken => {
                    self.inner.put_opts(location, payload, opts).await?;
                    return Err(object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: "412 Precondition Failed".into(),
                    });
                }
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        let answer = self.inner.get_opts(location, options).await;
        if self.looked_at.contains(location)
            && !self.moved.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            object_store::ObjectStoreExt::put(&self.inner, &self.tag, MOVED_TO.to_vec().into())
                .await
                .unwrap();
        }
        answer
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait::async_trait]
impl object_store::list::PaginatedListStore for ScriptedS3 {
    async fn list_paginated(
        &self,
        prefix: Option<&str>,
        opts: object_store::list::PaginatedListOptions,
    ) -> object_store::Result<object_store::list::PaginatedListResult> {
        self.inner.list_paginated(prefix, opts).await
    }
}

/// Restores the quarantined tag link `OLD_TARGET` to `TAG` on moto through a
/// `ScriptedS3` that moves the tag when the restore first looks at it (if
/// `push_during`) and answers conditional writes as `create` says, with
/// `TAG` already holding `MOVED_TO` if `pushed_before`. The move's result,
/// what `TAG` holds after, and whether the quarantined copy is still there.
async fn restore_a_tag(
    create: CreateAnswer,
    pushed_before: bool,
    push_during: bool,
) -> (registry_gc::storage::Moved, String, bool) {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("tag-restore");
    let quarantined = format!("_registry-gc/quarantine/run/{TAG}");
    let store = emulator.store();
    emulator
        .put(store.as_ref(), &format!("{root}/{quarantined}"), OLD_TARGET)
        .await;
    if pushed_before {
        emulator
            .put(store.as_ref(), &format!("{root}/{TAG}"), MOVED_TO)
            .await;
    }
    let path = |key: &str| object_store::path::Path::from(format!("{root}/{key}"));
    let scripted = ScriptedS3 {
        inner: emulator.s3(),
        looked_at: vec![path(TAG), path(&quarantined)],
        tag: path(TAG),
        moved: (!push_during).into(),
        create,
    };
    let storage = registry_gc::storage::object::ObjectStorage::new(
        Arc::new(scripted),
        registry_gc::storage::object::Service::S3,
        &root,
        emulator.url(&root),
    );
    let moves = vec![(quarantined.clone(), TAG.to_string())];
    let mut result = storage
        .move_batch(&moves, registry_gc::storage::MoveMode::KeepExisting)
        .await;
    let moved = result.remove(0).unwrap();
    let now = storage.get(TAG, 100).await.unwrap();
    let left = storage.exists(&quarantined).await.unwrap();
    (moved, String::from_utf8_lossy(&now).into_owned(), left)
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Restoring a tag's `current/link` on S3 while a push moves the tag: the
/// tag keeps the push's target. A look for the key, then a copy, replaced it
/// with the quarantined link (the tag back on its old manifest, the pushed
/// one untagged, for the next `--delete-untagged` run to take).
#[tokio::test(flavor = "multi_thread")]
async fn a_tag_moved_while_it_is_restored_keeps_its_new_target_moto() {
    use registry_gc::storage::Moved;
    let (moved, now, left) = restore_a_tag(CreateAnswer::Honoured, false, true).await;
    assert_eq!(moved, Moved::DestinationExists);
    assert_eq!(
        now,
        text_of(MOVED_TO),
        "the restore put the tag back on its old target"
    );
    assert!(
        left,
        "the quarantined copy stays, for a restore run again to report"
    );
    // and without the push, it goes back
    let (moved, now, left) = restore_a_tag(CreateAnswer::Honoured, false, false).await;
    assert_eq!(
        (moved, now, left),
        (Moved::Moved, text_of(OLD_TARGET), false)
    );
}

/// A store that drops `If-None-Match` writes over any key: the look that
/// comes first still keeps a tag pushed since the quarantine.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_ignoring_conditional_writes_keeps_a_tag_pushed_since_moto() {
    use registry_gc::storage::Moved;
    let (moved, now, left) = restore_a_tag(CreateAnswer::Ignored, true, false).await;
    assert_eq!(
        (moved, now, left),
        (Moved::DestinationExists, text_of(MOVED_TO), true)
    );
    let (moved, now, left) = restore_a_tag(CreateAnswer::Ignored, false, false).await;
    assert_eq!(
        (moved, now, left),
        (Moved::Moved, text_of(OLD_TARGET), false)
    );
}

/// A store answering 501 to a conditional write: links go back by the
/// checked copy, and never over a tag that is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_refusing_conditional_writes_restores_links_by_copy_moto() {
    use registry_gc::storage::Moved;
    let (moved, now, left) = restore_a_tag(CreateAnswer::NotImplemented, false, false).await;
    assert_eq!(
        (moved, now, left),
        (Moved::Moved, text_of(OLD_TARGET), false)
    );
    let (moved, now, left) = restore_a_tag(CreateAnswer::NotImplemented, true, false).await;
    assert_eq!(
        (moved, now, left),
        (Moved::DestinationExists, text_of(MOVED_TO), true)
    );
}

/// A write of ours that landed, answered 412 on its retry: the key holds
/// the restored bytes, and the move counts as done (the quarantined copy
/// goes), not as a key the registry wrote.
#[tokio::test(flavor = "multi_thread")]
async fn a_restored_link_answered_as_taken_counts_as_moved_moto() {
    use registry_gc::storage::Moved;
    let (moved, now, left) = restore_a_tag(CreateAnswer::LandedThenTaken, false, false).await;
    assert_eq!(
        (moved, now, left),
        (Moved::Moved, text_of(OLD_TARGET), false)
    );
}

/// A store set to take no conditional writes (`-o conditional_put=disabled`,
/// for an S3-compatible one that refuses `If-None-Match`) still restores
/// links, by the checked copy, and never over a key that is there.
#[tokio::test(flavor = "multi_thread")]
async fn links_are_restored_without_conditional_writes_moto() {
    let emulator = Emulator::Moto;
    emulator.require();
    let root = Emulator::unique_root("no-conditional-put");
    let mut options = emulator.backend_options();
    options.push("conditional_put", "disabled", "-o");
    let storage = open_storage(&emulator.url(&root), &options).unwrap();
    let store = emulator.store();
    let tags = "docker/registry/v2/repositories/app/_manifests/tags";
    for (key, bytes) in [
        ("q/a/link", "sha256:old-a"),
        ("q/b/link", "sha256:old-b"),
        ("d/b/link", "sha256:live-b"),
    ] {
        emulator
            .put(
                store.as_ref(),
                &format!("{root}/{tags}/{key}"),
                bytes.as_bytes(),
            )
            .await;
    }
    let moves: Vec<(String, String)> = ["a", "b"]
        .iter()
        .map(|t| (format!("{tags}/q/{t}/link"), format!("{tags}/d/{t}/link")))
        .collect();
    let result = storage
        .move_batch(&moves, registry_gc::storage::MoveMode::KeepExisting)
        .await;
    let result: Vec<_> = result.into_iter().map(Result::unwrap).collect();
    use registry_gc::storage::Moved;
    assert_eq!(result, vec![Moved::Moved, Moved::DestinationExists]);
    // the checked copy without trying the condition: no link read, one copy
    let counts = storage.counts().totals();
    assert_eq!((counts.get, counts.put), (0, 1), "{counts:?}");
    let keys = emulator.keys(&root).await;
    let names: Vec<&str> = keys
        .iter()
        .map(|k| k.rsplit("tags/").next().unwrap())
        .collect();
    assert_eq!(names, ["d/a/link", "d/b/link", "q/b/link"], "{keys:#?}");
    for (tag, bytes) in [("a", "sha256:old-a"), ("b", "sha256:live-b")] {
        let now = storage
            .get(&format!("{tags}/d/{tag}/link"), 100)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&now), bytes);
    }
}
