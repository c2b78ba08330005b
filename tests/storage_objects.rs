//! The storage conformance suite on every object store backend, each against its
//! emulator on 127.0.0.1 (started by `backends/setup-all.sh`; LocalStack by
//! `localstack/run-tests.sh`, which runs the ignored tests below).

mod common;
mod conformance;

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
