//! The storage emulators the cloud backends are tested against, each started on
//! 127.0.0.1 by a script in `backends/` (or `localstack/`). A test that needs one
//! fails when it is not running; it never passes by skipping.
//!
//! Tests are isolated by root directory (the registry driver's `rootdirectory`)
//! inside one bucket or container per emulator, which also exercises the prefix.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub const BUCKET: &str = "registry-gc-test";
/// Azurite's public, well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    Moto,
    LocalStack,
    Azurite,
    FakeGcs,
}

impl Emulator {
    pub fn name(self) -> &'static str {
        match self {
            Emulator::Moto => "moto",
            Emulator::LocalStack => "localstack",
            Emulator::Azurite => "azurite",
            Emulator::FakeGcs => "fake-gcs-server",
        }
    }

    fn port(self) -> u16 {
        let (var, default) = match self {
            Emulator::Moto => ("S3_PORT", 9000),
            Emulator::LocalStack => ("LOCALSTACK_PORT", 4566),
            Emulator::Azurite => ("AZURITE_PORT", 10000),
            Emulator::FakeGcs => ("GCS_PORT", 4443),
        };
        std::env::var(var)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default)
    }

    pub fn endpoint(self) -> String {
        match self {
            Emulator::Azurite => format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port()),
            _ => format!("http://127.0.0.1:{}", self.port()),
        }
    }

    fn start_script(self) -> &'static str {
        match self {
            Emulator::Moto => "backends/s3/start.sh",
            Emulator::LocalStack => "localstack/start.sh",
            Emulator::Azurite => "backends/azure/start.sh",
            Emulator::FakeGcs => "backends/gcs/start.sh",
        }
    }

    /// Panics (the test fails) unless the emulator answers on its port, and makes
    /// sure the test bucket or container exists.
    pub fn require(self) {
        let addr = format!("127.0.0.1:{}", self.port());
        if TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_err() {
            panic!(
                "{} is not running on {addr}: start it with `bash {}` (or `bash backends/setup-all.sh`){}",
                self.name(),
                self.start_script(),
                if std::env::var("CI").as_deref() == Ok("true") { " — CI must start it in .ci/run" } else { "" }
            );
        }
        self.ensure_bucket();
    }

    fn ensure_bucket(self) {
        let resp = match self {
            // moto and LocalStack take unsigned bucket creation
            Emulator::Moto | Emulator::LocalStack => super::http::send(
                "PUT",
                &format!("{}/{BUCKET}", self.endpoint()),
                &[],
                Some(b""),
            ),
            Emulator::FakeGcs => super::http::send(
                "POST",
                &format!("{}/storage/v1/b?project=test", self.endpoint()),
                &[("Content-Type", "application/json")],
                Some(format!("{{\"name\":\"{BUCKET}\"}}").as_bytes()),
            ),
            Emulator::Azurite => azurite_create_container(self.port()),
        }
        .unwrap_or_else(|e| panic!("{}: creating bucket {BUCKET}: {e}", self.name()));
        assert!(
            matches!(resp.status, 200 | 201 | 409),
            "{}: creating bucket {BUCKET}: HTTP {} {}",
            self.name(),
            resp.status,
            resp.text()
        );
    }

    /// The STORAGE URL for a registry whose `rootdirectory` is `root`.
    pub fn url(self, root: &str) -> String {
        match self {
            Emulator::Moto | Emulator::LocalStack => format!("s3://{BUCKET}/{root}"),
            Emulator::Azurite => format!("az://{BUCKET}/{root}"),
            Emulator::FakeGcs => format!("gs://{BUCKET}/{root}"),
        }
    }

    /// Flags that point registry-gc at the emulator, with its dev credentials.
    pub fn gc_args(self) -> Vec<String> {
        let v: Vec<&str> = match self {
            Emulator::Moto | Emulator::LocalStack => {
                vec![
                    "--allow-http",
                    "--region",
                    "us-east-1",
                    "-o",
                    "access_key_id=test",
                    "-o",
                    "secret_access_key=test",
                ]
            }
            // Azurite answers a 256-key Blob Batch slowly on a loaded machine:
            // past object_store's 30 s default timeout
            Emulator::Azurite => vec![
                "--allow-http",
                "-o",
                "use_emulator=true",
                "-o",
                "timeout=180s",
            ],
            // fake-gcs-server checks no credentials; a static token keeps the client
            // from asking a metadata server for one (skip_signature does not cover
            // deletes in object_store 0.14)
            Emulator::FakeGcs => vec!["--allow-http", "-o", "bearer_token=emulator"],
        };
        let mut args: Vec<String> = v.into_iter().map(String::from).collect();
        if self != Emulator::Azurite {
            args.extend(["--endpoint".to_string(), self.endpoint()]);
        }
        args
    }

    /// The same settings as `gc_args`, as backend options for the library's own
    /// `open_storage`.
    pub fn backend_options(self) -> registry_gc::config::BackendOptions {
        let mut o = registry_gc::config::BackendOptions::default();
        let args = self.gc_args();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--allow-http" => o.push("allow_http", "true", a),
                "--region" => o.push("region", it.next().unwrap(), a),
                "--endpoint" => o.push("endpoint", it.next().unwrap(), a),
                "-o" => {
                    let (k, v) = it.next().unwrap().split_once('=').unwrap();
                    o.push(k, v, a);
                }
                other => panic!("unexpected {other}"),
            }
        }
        o
    }

    /// An S3 client on the test bucket of moto or LocalStack, for a test
    /// that wraps it.
    pub fn s3(self) -> object_store::aws::AmazonS3 {
        assert!(matches!(self, Emulator::Moto | Emulator::LocalStack));
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// A direct object_store client on the test bucket, for seeding and checking.
    pub fn store(self) -> Arc<dyn ObjectStore> {
        match self {
            Emulator::Moto | Emulator::LocalStack => Arc::new(self.s3()),
            Emulator::Azurite => Arc::new(
                MicrosoftAzureBuilder::new()
                    .with_container_name(BUCKET)
                    .with_use_emulator(true)
                    .with_allow_http(true)
                    .build()
                    .unwrap(),
            ),
            Emulator::FakeGcs => Arc::new(
                GoogleCloudStorageBuilder::new()
                    .with_bucket_name(BUCKET)
                    .with_config("base_url".parse().unwrap(), self.endpoint())
                    .with_config("bearer_token".parse().unwrap(), "emulator")
                    .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                    .build()
                    .unwrap(),
            ),
        }
    }

    /// Writes one object. fake-gcs-server takes no XML uploads: its JSON API is used.
    pub async fn put(self, store: &dyn ObjectStore, key: &str, bytes: &[u8]) {
        if self == Emulator::FakeGcs {
            let url = format!(
                "{}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={}",
                self.endpoint(),
                urlencode(key)
            );
            let bytes = bytes.to_vec();
            let resp = tokio::task::spawn_blocking(move || {
                super::http::send(
                    "POST",
                    &url,
                    &[("Content-Type", "application/octet-stream")],
                    Some(&bytes),
                )
            })
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("upload {key}: {e}"));
            assert_eq!(resp.status, 200, "upload {key}: {}", resp.text());
        } else {
            store
                .put(&ObjectPath::from(key), PutPayload::from(bytes.to_vec()))
                .await
                .unwrap_or_else(|e| panic!("put {key}: {e}"));
        }
    }

    /// Writes an empty directory marker `key` (ending in `/`), as the S3
    /// console, s3fs and gcsfuse do: outside object_store, whose paths drop
    /// a trailing `/`. Moto and LocalStack take an unsigned PUT, and
    /// fake-gcs-server a JSON upload; `false` for Azurite, which wants a
    /// signed request.
    pub async fn put_directory_marker(self, key: &str) -> bool {
        assert!(key.ends_with('/'));
        let (url, content_type) = match self {
            Emulator::Moto | Emulator::LocalStack => {
                (format!("{}/{BUCKET}/{key}", self.endpoint()), None)
            }
            Emulator::FakeGcs => (
                format!(
                    "{}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={}",
                    self.endpoint(),
                    urlencode(key)
                ),
                Some("application/octet-stream"),
            ),
            Emulator::Azurite => return false,
        };
        let method = if content_type.is_some() {
            "POST"
        } else {
            "PUT"
        };
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("Content-Type", c))
            .into_iter()
            .collect();
        let resp = tokio::task::spawn_blocking(move || {
            super::http::send(method, &url, &headers, Some(b""))
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("marker {key}: {e}"));
        assert_eq!(resp.status, 200, "marker {key}: {}", resp.text());
        true
    }

    /// Copies a registry tree written on disk (`fs_root/docker/registry/v2/...`)
    /// key for key under `root/` in the bucket.
    pub async fn upload_tree(self, fs_root: &Path, root: &str) -> usize {
        let store = self.store();
        let keys: Vec<String> = super::tree::keys(fs_root).into_iter().collect();
        let n = keys.len();
        futures::stream::iter(keys)
            .map(|k| {
                let store = store.clone();
                let bytes = std::fs::read(super::tree::key_path(fs_root, &k)).unwrap();
                async move {
                    self.put(
                        store.as_ref(),
                        &format!("{root}/docker/registry/v2/{k}"),
                        &bytes,
                    )
                    .await
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        // Object times have one-second resolution, and registry-gc's fence keeps a
        // second of margin for stores that truncate them: an object from the
        // run's own second or the one before counts as young. Let both pass.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        n
    }

    /// Every key under `root/docker/registry/v2/`, relative to it.
    pub async fn keys(self, root: &str) -> BTreeSet<String> {
        let prefix = format!("{root}/docker/registry/v2/");
        self.store()
            .list(Some(&ObjectPath::from(prefix.as_str())))
            .map_ok(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(&prefix)
                    .unwrap()
                    .to_string()
            })
            .try_collect()
            .await
            .unwrap()
    }

    /// A root directory no other test uses.
    pub fn unique_root(test: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "{test}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }
}

use futures::StreamExt;

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates the test container on Azurite with a SharedKey-signed request (Azurite
/// checks signatures; object_store has no container API).
fn azurite_create_container(port: u16) -> Result<super::http::Resp, String> {
    azurite_signed(
        port,
        "PUT",
        &format!("/{BUCKET}"),
        "?restype=container",
        None,
    )
}

/// One SharedKey-signed request to Azurite, on `path` (from the container on,
/// sent as it is), with `query` (`?restype=container`, or empty) and, for a
/// blob, its body as a block blob.
fn azurite_signed(
    port: u16,
    method: &str,
    path: &str,
    query: &str,
    body: Option<&[u8]>,
) -> Result<super::http::Resp, String> {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let date = httpdate_now();
    let version = "2021-08-06";
    let canonical_query: String = query
        .trim_start_matches('?')
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| format!("\n{}", q.replacen('=', ":", 1)))
        .collect();
    let resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}{path}{canonical_query}");
    let (length, content_type, blob_type) = match body {
        Some(b) => (
            b.len().to_string(),
            "application/octet-stream",
            "x-ms-blob-type:BlockBlob\n",
        ),
        None => (String::new(), "", ""),
    };
    let to_sign = format!(
        "{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{blob_type}x-ms-date:{date}\nx-ms-version:{version}\n{resource}"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let auth = format!("SharedKey {AZURITE_ACCOUNT}:{sig}");
    let url = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}{path}{query}");
    let mut headers = vec![
        ("x-ms-date", date.as_str()),
        ("x-ms-version", version),
        ("Authorization", auth.as_str()),
    ];
    if body.is_some() {
        headers.extend([
            ("x-ms-blob-type", "BlockBlob"),
            ("Content-Type", content_type),
        ]);
    }
    super::http::send(method, &url, &headers, body)
}

impl Emulator {
    /// Copies a registry tree written on disk into Azurite as distribution
    /// 2.x's Azure driver names blobs: each name begins with `/`
    /// (`/<root>/docker/registry/v2/...`), which object_store cannot write.
    pub fn upload_tree_with_leading_slash(self, fs_root: &Path, root: &str) -> usize {
        assert_eq!(self, Emulator::Azurite);
        let keys: Vec<String> = super::tree::keys(fs_root).into_iter().collect();
        for k in &keys {
            let bytes = std::fs::read(super::tree::key_path(fs_root, k)).unwrap();
            let path = format!("/{BUCKET}//{root}/docker/registry/v2/{k}");
            let resp = azurite_signed(self.port(), "PUT", &path, "", Some(&bytes))
                .unwrap_or_else(|e| panic!("put {path}: {e}"));
            assert_eq!(resp.status, 201, "put {path}: {}", resp.text());
        }
        keys.len()
    }

    /// How many blobs Azurite holds whose names begin with `/<root>/`.
    pub fn count_with_leading_slash(self, root: &str) -> usize {
        assert_eq!(self, Emulator::Azurite);
        let query = format!("?comp=list&prefix=/{root}/&restype=container");
        let resp = azurite_signed(self.port(), "GET", &format!("/{BUCKET}"), &query, None)
            .unwrap_or_else(|e| panic!("list /{root}/: {e}"));
        let text = resp.text();
        assert_eq!(resp.status, 200, "list /{root}/: {text}");
        assert!(
            !text.contains("<NextMarker>/"),
            "more than one page: {text}"
        );
        text.matches("<Name>/").count()
    }
}

fn httpdate_now() -> String {
    // RFC 1123, as Azure wants it
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}
