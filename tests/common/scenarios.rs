//! Scenario builders: push through a running [`Registry`], record everything in a
//! [`Model`], and return a [`Scenario`] that says what must survive in each GC mode.
//!
//! Every scenario's hand-written expectations (`ImageRecord::survives_default` /
//! `survives_untagged`) are cross-checked against the model's computed expectations when the
//! scenario is built ([`Pusher::finish`] panics on any disagreement), so the two descriptions
//! of the semantics cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::http;
use super::images::{
    cosign_tag, det_bytes, layer_blob, sha256_digest, Blob, Image, Index, IndexKind, Platform,
    PushedImage,
};
use super::model::{Expectation, Mode, Model};
use super::registry::Registry;
use super::tree;

/// One manifest of a scenario with its expected fate.
#[derive(Clone, Debug)]
pub struct ImageRecord {
    /// Unique, human-readable name within the scenario (e.g. `"alpine:3.19"`).
    pub label: String,
    pub image: PushedImage,
    /// Its revision link (and so the image) must survive a default-mode GC.
    pub survives_default: bool,
    /// Its revision link must survive a `--delete-untagged` GC.
    pub survives_untagged: bool,
    /// False for manifests written straight into storage that the registry itself
    /// cannot serve (schema1 it re-signs, over 4 MiB, a link with a newline): those
    /// are checked on disk instead of pulled.
    pub servable: bool,
}

impl ImageRecord {
    pub fn survives(&self, mode: Mode) -> bool {
        match mode {
            Mode::Default => self.survives_default,
            Mode::DeleteUntagged => self.survives_untagged,
        }
    }
    pub fn repo(&self) -> &str {
        &self.image.repo
    }
    pub fn digest(&self) -> &str {
        &self.image.digest
    }
}

/// What a scenario pushed and what must survive.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// Root directory of the tree (the registry's rootdirectory).
    pub root: PathBuf,
    /// Full record of storage contents after the scenario (see [`Model`]).
    pub model: Model,
    pub images: Vec<ImageRecord>,
    /// Blobs uploaded but referenced by no manifest.
    pub orphan_blobs: BTreeSet<String>,
    /// (repo, uuid) of abandoned uploads.
    pub uploads: Vec<(String, String)>,
    /// Free-form notes (e.g. where 2.8.2's reference collector disagrees).
    pub notes: Vec<String>,
}

impl Scenario {
    /// Expected kept/deleted blobs and revisions in `mode` (computed from the model).
    pub fn expectation(&self, mode: Mode) -> Expectation {
        self.model.expect(mode)
    }
    pub fn expected_kept_blobs(&self, mode: Mode) -> BTreeSet<String> {
        self.expectation(mode).kept_blobs
    }
    pub fn expected_deleted_blobs(&self, mode: Mode) -> BTreeSet<String> {
        self.expectation(mode).deleted_blobs
    }
    /// Every blob in storage before GC.
    pub fn all_blobs(&self) -> &BTreeSet<String> {
        &self.model.blobs
    }
    pub fn image(&self, label: &str) -> &ImageRecord {
        self.images
            .iter()
            .find(|r| r.label == label)
            .unwrap_or_else(|| panic!("scenario {}: no image labelled {label:?}", self.name))
    }
    /// Records whose revision link exists now (before any GC).
    pub fn present(&self) -> Vec<&ImageRecord> {
        self.images
            .iter()
            .filter(|r| {
                self.model
                    .repos
                    .get(r.repo())
                    .map(|s| s.revisions.contains(r.digest()))
                    .unwrap_or(false)
            })
            .collect()
    }
    pub fn survivors(&self, mode: Mode) -> Vec<&ImageRecord> {
        self.images.iter().filter(|r| r.survives(mode)).collect()
    }
    /// Survivors that can be pulled after GC: every child manifest (recursively) also keeps
    /// its revision link in the same repository.
    pub fn pullable(&self, mode: Mode) -> Vec<&ImageRecord> {
        let exp = self.expectation(mode);
        self.survivors(mode)
            .into_iter()
            .filter(|r| r.servable)
            .filter(|r| {
                let kept = exp
                    .kept_revisions
                    .get(r.repo())
                    .cloned()
                    .unwrap_or_default();
                fn ok(img: &PushedImage, kept: &BTreeSet<String>) -> bool {
                    kept.contains(&img.digest) && img.children.iter().all(|c| ok(c, kept))
                }
                ok(&r.image, &kept)
            })
            .collect()
    }
    /// Pullable before any GC: present and all children present.
    pub fn pullable_now(&self) -> Vec<&ImageRecord> {
        self.present()
            .into_iter()
            .filter(|r| {
                let revs = &self.model.repos[r.repo()].revisions;
                fn ok(img: &PushedImage, revs: &BTreeSet<String>) -> bool {
                    revs.contains(&img.digest) && img.children.iter().all(|c| ok(c, revs))
                }
                ok(&r.image, revs)
            })
            .collect()
    }
    /// Blob digests (manifest, config, layers, children, recursively) an image needs.
    pub fn needed_blobs(&self, rec: &ImageRecord) -> BTreeSet<String> {
        rec.image.all_digests()
    }
    /// Tags (per the model, now) pointing at a record.
    pub fn tags_of(&self, rec: &ImageRecord) -> Vec<String> {
        self.model
            .repos
            .get(rec.repo())
            .map(|r| {
                r.tags
                    .iter()
                    .filter(|(_, d)| *d == rec.digest())
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// pull_verify every record in `recs` by digest and by each of its tags; checks that the
    /// verified digests cover `needed_blobs`. Returns the number of pulls done.
    pub fn pull_verify_records(&self, base: &str, recs: &[&ImageRecord]) -> Result<usize, String> {
        let mut n = 0;
        for r in recs {
            let mut refs = vec![r.digest().to_string()];
            refs.extend(self.tags_of(r));
            for reference in refs {
                let got: BTreeSet<String> = http::pull_verify(base, r.repo(), &reference)
                    .map_err(|e| format!("[{}] {e}", r.label))?
                    .into_iter()
                    .collect();
                let need = self.needed_blobs(r);
                let missing: Vec<_> = need.difference(&got).collect();
                if !missing.is_empty() {
                    return Err(format!(
                        "[{}] pull_verify {}:{reference} did not verify {missing:?}",
                        r.label,
                        r.repo()
                    ));
                }
                n += 1;
            }
        }
        Ok(n)
    }
    /// Checks on disk that every surviving record's manifest blob, config, layers and
    /// children's manifest blobs exist under `root` with content matching their digest.
    pub fn verify_survivors_on_disk(&self, root: &Path, mode: Mode) -> Result<usize, String> {
        let mut n = 0;
        for r in self.survivors(mode) {
            let mut need = BTreeSet::from([r.digest().to_string()]);
            if let Some(info) = self.model.manifests.get(r.digest()) {
                need.extend(info.blobs.iter().cloned());
                need.extend(info.children.iter().cloned());
            }
            for d in need {
                let path = tree::key_path(root, &tree::blob_key_for_digest(&d));
                let bytes = std::fs::read(&path).map_err(|e| format!("[{}] {d}: {e}", r.label))?;
                if super::images::sha256_digest(&bytes) != d {
                    return Err(format!(
                        "[{}] {d}: content does not match its digest",
                        r.label
                    ));
                }
                n += 1;
            }
        }
        Ok(n)
    }
    /// pull_verify everything that must be pullable after a GC in `mode`.
    pub fn pull_verify_survivors(&self, base: &str, mode: Mode) -> Result<usize, String> {
        self.pull_verify_records(base, &self.pullable(mode))
    }
    /// pull_verify everything pullable before GC.
    pub fn pull_verify_present(&self, base: &str) -> Result<usize, String> {
        self.pull_verify_records(base, &self.pullable_now())
    }
    /// Checks the model against a tree (the scenario's own root by default).
    pub fn check_tree(&self, root: Option<&Path>) -> Result<(), String> {
        self.model.check_tree(root.unwrap_or(&self.root))
    }
    /// Panics if the hand-written expectations disagree with the model's.
    pub fn verify_consistency(&self) {
        let mut errs = Vec::new();
        let mut labels = BTreeSet::new();
        for r in &self.images {
            if !labels.insert(r.label.clone()) {
                errs.push(format!("duplicate label {:?}", r.label));
            }
        }
        for mode in Mode::ALL {
            let exp = self.expectation(mode);
            for r in &self.images {
                let model_says = exp
                    .kept_revisions
                    .get(r.repo())
                    .map(|s| s.contains(r.digest()))
                    .unwrap_or(false);
                if model_says != r.survives(mode) {
                    errs.push(format!(
                        "{mode:?}: [{}] {} hand-written survives={} but model says {}",
                        r.label,
                        r.image.reference(),
                        r.survives(mode),
                        model_says
                    ));
                }
                if r.survives(mode) {
                    // What a kept revision itself holds on to: its blob, config, layers
                    // and its children's manifest blobs. Children's own layers are
                    // checked through the children's records.
                    let mut direct = BTreeSet::from([r.digest().to_string()]);
                    if let Some(info) = self.model.manifests.get(r.digest()) {
                        direct.extend(info.blobs.iter().cloned());
                        direct.extend(info.children.iter().cloned());
                    }
                    let missing: Vec<_> = direct
                        .into_iter()
                        .filter(|d| self.model.blobs.contains(d) && !exp.kept_blobs.contains(d))
                        .collect();
                    if !missing.is_empty() {
                        errs.push(format!(
                            "{mode:?}: [{}] survives but needs deleted blobs {missing:?}",
                            r.label
                        ));
                    }
                }
            }
            for o in &self.orphan_blobs {
                if !exp.deleted_blobs.contains(o) {
                    errs.push(format!(
                        "{mode:?}: orphan blob {o} is not expected to be deleted"
                    ));
                }
            }
        }
        if !errs.is_empty() {
            panic!(
                "scenario {}: inconsistent expectations:\n{}",
                self.name,
                errs.join("\n")
            );
        }
    }
    /// A short multi-line summary (counts per mode).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "scenario {}: {} repositories, {} manifests recorded, {} blobs, {} orphan blobs, {} abandoned uploads\n",
            self.name,
            self.model.repos.len(),
            self.images.len(),
            self.model.blobs.len(),
            self.orphan_blobs.len(),
            self.uploads.len()
        );
        for mode in Mode::ALL {
            let e = self.expectation(mode);
            let dr: usize = e.deleted_revisions.values().map(|v| v.len()).sum();
            s.push_str(&format!(
                "  {mode:?}: {} images survive, keep {} blobs, delete {} blobs, delete {} revisions\n",
                self.survivors(mode).len(),
                e.kept_blobs.len(),
                e.deleted_blobs.len(),
                dr
            ));
        }
        s
    }
}

/// Pushes through the HTTP API (or writes the tree directly) and records everything.
pub struct Pusher {
    pub base: String,
    pub root: PathBuf,
    pub model: Model,
    pub images: Vec<ImageRecord>,
    pub orphan_blobs: BTreeSet<String>,
    pub uploads: Vec<(String, String)>,
    pub notes: Vec<String>,
}

impl Pusher {
    pub fn new(reg: &Registry) -> Pusher {
        Pusher {
            base: reg.url().to_string(),
            root: reg.root().to_path_buf(),
            model: Model::default(),
            images: Vec::new(),
            orphan_blobs: BTreeSet::new(),
            uploads: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Uploads a blob into `repo` unless this repo already has it (like a client after HEAD).
    pub fn blob(&mut self, repo: &str, blob: &Blob) -> String {
        let have = self
            .model
            .repos
            .get(repo)
            .map(|r| r.layer_links.contains(&blob.digest))
            .unwrap_or(false);
        if !have {
            let d = http::upload_blob(&self.base, repo, &blob.bytes);
            assert_eq!(d, blob.digest);
            self.model.record_blob(repo, &d);
        }
        blob.digest.clone()
    }

    /// Uploads config + layers, then puts the manifest by `tag` (or by digest if None).
    pub fn image(&mut self, repo: &str, image: &Image, tag: Option<&str>) -> PushedImage {
        for b in image.blobs() {
            self.blob(repo, b);
        }
        let bytes = image.manifest_bytes();
        let digest = sha256_digest(&bytes);
        let reference = tag.unwrap_or(&digest).to_string();
        let got = http::put_manifest(&self.base, repo, &reference, image.media_type(), &bytes);
        assert_eq!(got, digest);
        self.model.record_manifest(repo, &digest, &bytes, tag);
        PushedImage {
            repo: repo.to_string(),
            digest,
            media_type: image.media_type().to_string(),
            bytes,
            blobs: image.blob_digests(),
            children: Vec::new(),
            subject: image.subject.as_ref().map(|s| s.digest.clone()),
            artifact_type: image.artifact_type.clone(),
            tag: tag.map(str::to_string),
        }
    }

    /// Puts a list/index (children must already be in `repo`: 2.8 refuses a list whose
    /// children have no revision link in the same repository, MANIFEST_BLOB_UNKNOWN).
    pub fn index(&mut self, repo: &str, index: &Index, tag: Option<&str>) -> PushedImage {
        for (c, _) in &index.children {
            assert_eq!(
                c.repo,
                repo,
                "index child {} must be pushed into {repo} first",
                c.reference()
            );
        }
        let bytes = index.manifest_bytes();
        let digest = sha256_digest(&bytes);
        let reference = tag.unwrap_or(&digest).to_string();
        let got = http::put_manifest(&self.base, repo, &reference, index.media_type(), &bytes);
        assert_eq!(got, digest);
        self.model.record_manifest(repo, &digest, &bytes, tag);
        PushedImage {
            repo: repo.to_string(),
            digest,
            media_type: index.media_type().to_string(),
            bytes,
            blobs: Vec::new(),
            children: index.children.iter().map(|(c, _)| c.clone()).collect(),
            subject: index.subject.as_ref().map(|s| s.digest.clone()),
            artifact_type: index.artifact_type.clone(),
            tag: tag.map(str::to_string),
        }
    }

    /// Puts an already-pushed manifest again under `tag` (moves the tag if it exists).
    pub fn tag(&mut self, img: &PushedImage, tag: &str) {
        let got = http::put_manifest(&self.base, &img.repo, tag, &img.media_type, &img.bytes);
        assert_eq!(got, img.digest);
        self.model
            .record_manifest(&img.repo, &img.digest, &img.bytes, Some(tag));
    }

    /// DELETE by digest through the API.
    pub fn delete(&mut self, img: &PushedImage) {
        http::delete_manifest(&self.base, &img.repo, &img.digest);
        self.model.record_delete(&img.repo, &img.digest);
    }

    /// Uploads a blob that no manifest will reference.
    pub fn orphan_blob(&mut self, repo: &str, seed: &str) -> String {
        let b = layer_blob(&format!("orphan:{seed}"));
        let d = http::upload_blob(&self.base, repo, &b.bytes);
        self.model.record_blob(repo, &d);
        self.orphan_blobs.insert(d.clone());
        d
    }

    /// POST + one PATCH of a few KB, never completed.
    pub fn abandoned_upload(&mut self, repo: &str, seed: &str) -> String {
        let bytes = det_bytes(&format!("upload:{seed}"), 3000);
        let uuid = http::start_abandoned_upload(&self.base, repo, &bytes);
        self.model.record_upload(repo, &uuid);
        self.uploads.push((repo.to_string(), uuid.clone()));
        uuid
    }

    /// Writes a manifest directly into the tree (blob + revision link + tag links) for shapes
    /// the registry refuses over HTTP. Referenced blobs must be pushed separately.
    pub fn write_manifest_direct(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> PushedImage {
        let digest = tree::write_manifest(&self.root, repo, tag, bytes);
        self.model.record_manifest(repo, &digest, bytes, tag);
        let info = self.model.manifests[&digest].clone();
        PushedImage {
            repo: repo.to_string(),
            digest,
            media_type: media_type.to_string(),
            bytes: bytes.to_vec(),
            blobs: info.blobs,
            children: Vec::new(),
            subject: info.subject,
            artifact_type: None,
            tag: tag.map(str::to_string),
        }
    }

    /// Records the expected fate of a manifest.
    pub fn expect(
        &mut self,
        label: &str,
        img: &PushedImage,
        survives_default: bool,
        survives_untagged: bool,
    ) {
        self.images.push(ImageRecord {
            label: label.to_string(),
            image: img.clone(),
            survives_default,
            survives_untagged,
            servable: true,
        });
    }

    /// Like `expect`, for an image the registry cannot serve (see `ImageRecord::servable`).
    pub fn expect_unservable(
        &mut self,
        label: &str,
        img: &PushedImage,
        survives_default: bool,
        survives_untagged: bool,
    ) {
        self.expect(label, img, survives_default, survives_untagged);
        self.images.last_mut().expect("just pushed").servable = false;
    }

    pub fn note(&mut self, text: &str) {
        self.notes.push(text.to_string());
    }

    /// Builds the scenario and cross-checks the expectations (panics on disagreement).
    pub fn finish(self, name: &str) -> Scenario {
        let s = Scenario {
            name: name.to_string(),
            root: self.root,
            model: self.model,
            images: self.images,
            orphan_blobs: self.orphan_blobs,
            uploads: self.uploads,
            notes: self.notes,
        };
        s.verify_consistency();
        s
    }
}

fn sbom_payload(subject: &PushedImage) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "name": format!("sbom of {}", subject.reference()),
        "packages": [{"name": "busybox", "versionInfo": "1.36.1"}],
    }))
    .unwrap()
}

/// The big realistic scenario (4 repositories, one nested inside another's path).
///
/// Expected fate (D = default mode, U = `--delete-untagged`):
///
/// | label | repo | how | D | U |
/// |---|---|---|---|---|
/// | `alpine:3.19` | library/alpine | docker, tags 3.19 + latest, shares `base` layer | keep | keep |
/// | `alpine:3.19.sig` | library/alpine | cosign signature, tag `sha256-<hex>.sig`, no subject | keep | keep |
/// | `alpine:multi` | library/alpine | docker manifest list, tagged | keep | keep |
/// | `alpine:multi/amd64`, `/arm64` | library/alpine | docker children, by digest only | keep | keep |
/// | `alpine@x-copy` | library/alpine | image X pushed by digest only | keep | drop |
/// | `app:v1-old` | team/app | OCI, was `v1`, tag moved away | keep | drop |
/// | `app:v1` | team/app | OCI, `v1` now | keep | keep |
/// | `app:v1-old.referrer` | team/app | untagged artifact, subject = v1-old | keep | drop |
/// | `app:v1.sbom` | team/app | untagged SBOM artifact, subject = v1 | keep | keep |
/// | `app:v2` | team/app | OCI index, tagged | keep | keep |
/// | `app:v2/amd64`, `/arm64` | team/app | OCI children, by digest only | keep | keep |
/// | `app:v2/amd64.att` | team/app | untagged artifact, subject = v2/amd64 | keep | keep |
/// | `app:old` | team/app | docker, tagged then DELETEd by digest | drop | drop |
/// | `cache:buildcache` | team/app/cache | OCI, shares `app-shared` layer with team/app | keep | keep |
/// | `cache@untagged` | team/app/cache | OCI, by digest only | keep | drop |
/// | `svc:1.0` | org/team/svc | docker, tagged | keep | keep |
/// | `svc:1.0.attestations` | org/team/svc | untagged OCI index, subject = 1.0, artifactType | keep | keep |
/// | `svc:1.0.attestations/child` | org/team/svc | in-toto artifact, by digest only | keep | keep |
/// | `svc:tmp(x)` | org/team/svc | image X, tagged then DELETEd (still in library/alpine) | drop | drop |
/// | `svc:1.1` | org/team/svc | docker, tagged then DELETEd | drop | drop |
/// | `svc:1.1.sig` | org/team/svc | cosign signature of 1.1, still tagged | keep | keep |
///
/// Plus orphan blobs in team/app and org/team/svc and abandoned uploads in team/app,
/// team/app/cache and org/team/svc.
pub fn mixed(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let base = layer_blob("mixed/base");
    let app_shared = layer_blob("mixed/app-shared");

    // ---- library/alpine
    let alp = "library/alpine";
    let a1 = p.image(
        alp,
        &Image::docker("mixed/alpine-3.19", 1).with_layer(base.clone()),
        Some("3.19"),
    );
    p.tag(&a1, "latest");
    let a1sig = p.image(
        alp,
        &Image::cosign_signature(alp, &a1.digest),
        Some(&cosign_tag(&a1.digest, "sig")),
    );
    let am1 = p.image(
        alp,
        &Image::docker("mixed/alpine-amd64", 1).with_layer(base.clone()),
        None,
    );
    let am2 = p.image(alp, &Image::docker("mixed/alpine-arm64", 2), None);
    let multi = p.index(
        alp,
        &Index::new(
            IndexKind::DockerList,
            vec![
                (am1.clone(), Some(Platform::linux("amd64"))),
                (am2.clone(), Some(Platform::linux("arm64"))),
            ],
        ),
        Some("multi"),
    );
    p.expect("alpine:3.19", &a1, true, true);
    p.expect("alpine:3.19.sig", &a1sig, true, true);
    p.expect("alpine:multi", &multi, true, true);
    p.expect("alpine:multi/amd64", &am1, true, true);
    p.expect("alpine:multi/arm64", &am2, true, true);

    // ---- team/app
    let app = "team/app";
    let b1 = p.image(
        app,
        &Image::oci("mixed/app-v1-old", 1).with_layer(base.clone()),
        Some("v1"),
    );
    let b2 = p.image(
        app,
        &Image::oci("mixed/app-v1-new", 1)
            .with_layer(base.clone())
            .with_layer(app_shared.clone()),
        Some("v1"),
    );
    let r1 = p.image(
        app,
        &Image::artifact(
            "application/vnd.example.signature.v1+json",
            "application/vnd.example.signature.v1+json",
            det_bytes("mixed/b1-signature", 600),
        )
        .with_subject(&b1),
        None,
    );
    let sbom = p.image(
        app,
        &Image::artifact(
            "application/spdx+json",
            "application/spdx+json",
            sbom_payload(&b2),
        )
        .with_subject(&b2),
        None,
    );
    let c1 = p.image(app, &Image::oci("mixed/app-v2-amd64", 2), None);
    let c2 = p.image(app, &Image::oci("mixed/app-v2-arm64", 2), None);
    let v2 = p.index(
        app,
        &Index::with_default_platforms(IndexKind::OciIndex, vec![c1.clone(), c2.clone()]),
        Some("v2"),
    );
    let c1att = p.image(
        app,
        &Image::artifact(
            "application/vnd.in-toto+json",
            "application/vnd.in-toto+json",
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":\"{}\"}}",
                c1.digest
            )
            .into_bytes(),
        )
        .with_subject(&c1),
        None,
    );
    let d1 = p.image(
        app,
        &Image::docker("mixed/app-old", 1).with_layer(base.clone()),
        Some("old"),
    );
    p.delete(&d1);
    p.orphan_blob(app, "mixed/app-orphan");
    p.abandoned_upload(app, "mixed/app-upload");
    p.expect("app:v1-old", &b1, true, false);
    p.expect("app:v1", &b2, true, true);
    p.expect("app:v1-old.referrer", &r1, true, false);
    p.expect("app:v1.sbom", &sbom, true, true);
    p.expect("app:v2", &v2, true, true);
    p.expect("app:v2/amd64", &c1, true, true);
    p.expect("app:v2/arm64", &c2, true, true);
    p.expect("app:v2/amd64.att", &c1att, true, true);
    p.expect("app:old", &d1, false, false);

    // ---- team/app/cache (a repository inside team/app's path)
    let cache = "team/app/cache";
    let e1 = p.image(
        cache,
        &Image::oci("mixed/cache", 1).with_layer(app_shared.clone()),
        Some("buildcache"),
    );
    let e2 = p.image(cache, &Image::oci("mixed/cache-untagged", 2), None);
    p.abandoned_upload(cache, "mixed/cache-upload");
    p.expect("cache:buildcache", &e1, true, true);
    p.expect("cache@untagged", &e2, true, false);

    // ---- org/team/svc
    let svc = "org/team/svc";
    let s1 = p.image(svc, &Image::docker("mixed/svc-1.0", 2), Some("1.0"));
    let att = p.image(
        svc,
        &Image::artifact(
            "application/vnd.in-toto+json",
            "application/vnd.in-toto+json",
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":\"{}\"}}",
                s1.digest
            )
            .into_bytes(),
        ),
        None,
    );
    let ri = p.index(
        svc,
        &Index::oci_index(vec![(att.clone(), None)])
            .with_subject(&s1)
            .with_artifact_type("application/vnd.example.attestations.v1"),
        None,
    );
    // Image X: the same manifest in two repositories, deleted from one.
    let x_image = Image::oci("mixed/shared-x", 1);
    let x_svc = p.image(svc, &x_image, Some("tmp"));
    let x_alp = p.image(alp, &x_image, None);
    assert_eq!(x_svc.digest, x_alp.digest);
    p.delete(&x_svc);
    let s2 = p.image(svc, &Image::docker("mixed/svc-1.1", 1), Some("1.1"));
    let s2sig = p.image(
        svc,
        &Image::cosign_signature(svc, &s2.digest),
        Some(&cosign_tag(&s2.digest, "sig")),
    );
    p.delete(&s2);
    p.orphan_blob(svc, "mixed/svc-orphan");
    p.abandoned_upload(svc, "mixed/svc-upload");
    p.expect("svc:1.0", &s1, true, true);
    p.expect("svc:1.0.attestations", &ri, true, true);
    p.expect("svc:1.0.attestations/child", &att, true, true);
    p.expect("svc:tmp(x)", &x_svc, false, false);
    p.expect("alpine@x-copy", &x_alp, true, false);
    p.expect("svc:1.1", &s2, false, false);
    p.expect("svc:1.1.sig", &s2sig, true, true);

    p.note(
        "2.8.2 `garbage-collect --delete-untagged` does not follow the children of a tagged list/index \
         nor keep untagged referrers: it deletes alpine:multi/*, app:v2/*, app:v1.sbom, app:v2/amd64.att and \
         svc:1.0.attestations* that these expectations keep.",
    );
    p.finish("mixed")
}

// ---------------------------------------------------------------------------------------
// Mirrors of distribution's registry/storage/garbagecollect_test.go (same repository names).
// `uploadRandomSchema2Image` there pushes a 2-layer schema2 image WITHOUT a tag.

fn random_schema2(p: &mut Pusher, repo: &str, seed: &str) -> PushedImage {
    p.image(repo, &Image::docker(seed, 2), None)
}

/// TestNoDeletionNoEffect: 3 untagged images and an untagged list over two of them.
/// Default mode deletes nothing; delete-untagged deletes everything (nothing is tagged).
pub fn no_deletion_no_effect(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "palailogos";
    let i1 = random_schema2(&mut p, repo, "palailogos/1");
    let i2 = random_schema2(&mut p, repo, "palailogos/2");
    let i3 = random_schema2(&mut p, repo, "palailogos/3");
    let list = p.index(
        repo,
        &Index::with_default_platforms(IndexKind::DockerList, vec![i1.clone(), i2.clone()]),
        None,
    );
    p.expect("image1", &i1, true, false);
    p.expect("image2", &i2, true, false);
    p.expect("image3", &i3, true, false);
    p.expect("list", &list, true, false);
    p.note(
        "no tags at all: 2.8.2 --delete-untagged aborts on a repository without _manifests/tags",
    );
    p.finish("no_deletion_no_effect")
}

/// TestDeleteManifestIfTagNotFound: two 3-layer images pushed untagged, then tag `test`
/// pointed at the first and moved to the second; the first is untagged.
pub fn delete_manifest_if_tag_not_found(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "deletemanifests";
    let m1 = p.image(repo, &Image::docker("deletemanifests/1", 3), None);
    let m2 = p.image(repo, &Image::docker("deletemanifests/2", 3), None);
    p.tag(&m1, "test");
    p.tag(&m2, "test");
    p.expect("manifest1", &m1, true, false);
    p.expect("manifest2", &m2, true, true);
    p.finish("delete_manifest_if_tag_not_found")
}

/// TestDeletionHasEffect: three untagged images, 2 and 3 deleted by digest.
pub fn deletion_has_effect(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "komnenos";
    let i1 = random_schema2(&mut p, repo, "komnenos/1");
    let i2 = random_schema2(&mut p, repo, "komnenos/2");
    let i3 = random_schema2(&mut p, repo, "komnenos/3");
    p.delete(&i2);
    p.delete(&i3);
    p.expect("image1", &i1, true, false);
    p.expect("image2", &i2, false, false);
    p.expect("image3", &i3, false, false);
    p.finish("deletion_has_effect")
}

/// TestDeletionWithSharedLayer: manifest2 shares one layer with manifest1 and is deleted;
/// manifest1's layers (including the shared one) must survive.
pub fn deletion_with_shared_layer(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "tzimiskes";
    let img1 = Image::docker("tzimiskes/1", 3);
    let shared = img1.layers[0].clone();
    let img2 = Image::docker("tzimiskes/2", 3).with_layer(shared);
    let m1 = p.image(repo, &img1, None);
    let m2 = p.image(repo, &img2, None);
    p.delete(&m2);
    p.expect("manifest1", &m1, true, false);
    p.expect("manifest2", &m2, false, false);
    p.finish("deletion_with_shared_layer")
}

/// TestOrphanBlobDeleted: one orphan blob + one untagged image.
pub fn orphan_blob_deleted(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "michael_z_doukas";
    p.orphan_blob(repo, "michael_z_doukas/orphan");
    let i = random_schema2(&mut p, repo, "michael_z_doukas/1");
    p.expect("image", &i, true, false);
    p.finish("orphan_blob_deleted")
}

/// TestTaggedManifestlistWithUntaggedManifest: untagged children, list tagged `test`.
/// Everything survives both modes (2.8.2 `-m` gets this wrong; fixed upstream in v3).
pub fn tagged_list_with_untagged_children(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "foo/taggedlist/untaggedmanifest";
    let i1 = random_schema2(&mut p, repo, "taggedlist/1");
    let i2 = random_schema2(&mut p, repo, "taggedlist/2");
    let list = p.index(
        repo,
        &Index::with_default_platforms(IndexKind::DockerList, vec![i1.clone(), i2.clone()]),
        Some("test"),
    );
    p.expect("image1", &i1, true, true);
    p.expect("image2", &i2, true, true);
    p.expect("list", &list, true, true);
    p.finish("tagged_list_with_untagged_children")
}

/// TestUnTaggedManifestlistWithUntaggedManifest: nothing tagged; `-m` deletes everything.
pub fn untagged_list_with_untagged_children(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "foo/untaggedlist/untaggedmanifest";
    let i1 = random_schema2(&mut p, repo, "untaggedlist-untagged/1");
    let i2 = random_schema2(&mut p, repo, "untaggedlist-untagged/2");
    let list = p.index(
        repo,
        &Index::with_default_platforms(IndexKind::DockerList, vec![i1.clone(), i2.clone()]),
        None,
    );
    p.expect("image1", &i1, true, false);
    p.expect("image2", &i2, true, false);
    p.expect("list", &list, true, false);
    p.finish("untagged_list_with_untagged_children")
}

/// TestUnTaggedManifestlistWithTaggedManifest: children tagged image1/image2, list untagged;
/// `-m` deletes only the list.
pub fn untagged_list_with_tagged_children(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "foo/untaggedlist/taggedmanifest";
    let i1 = p.image(
        repo,
        &Image::docker("untaggedlist-tagged/1", 2),
        Some("image1"),
    );
    let i2 = p.image(
        repo,
        &Image::docker("untaggedlist-tagged/2", 2),
        Some("image2"),
    );
    let list = p.index(
        repo,
        &Index::with_default_platforms(IndexKind::DockerList, vec![i1.clone(), i2.clone()]),
        None,
    );
    p.expect("image1", &i1, true, true);
    p.expect("image2", &i2, true, true);
    p.expect("list", &list, true, false);
    p.finish("untagged_list_with_tagged_children")
}

/// TestTaggedManifestlistWithDeletedreference: a list over two images, then both images
/// DELETEd by digest. Upstream never actually tags the list (and expects `-m` to delete
/// everything): pass `tag_list = false` for that. With `tag_list = true` the list is tagged
/// `test`; under these semantics the list then keeps its children's blobs in both modes
/// (the children lose their revision links, so the list is not pullable either way).
pub fn tagged_list_with_deleted_references(reg: &Registry, tag_list: bool) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "foo/untaggedlist/deleteref";
    let i1 = random_schema2(&mut p, repo, "deleteref/1");
    let i2 = random_schema2(&mut p, repo, "deleteref/2");
    let list = p.index(
        repo,
        &Index::with_default_platforms(IndexKind::DockerList, vec![i1.clone(), i2.clone()]),
        tag_list.then_some("test"),
    );
    p.delete(&i1);
    p.delete(&i2);
    p.expect("image1", &i1, false, false);
    p.expect("image2", &i2, false, false);
    p.expect("list", &list, true, tag_list);
    p.finish(if tag_list {
        "tagged_list_with_deleted_references"
    } else {
        "untagged_list_with_deleted_references"
    })
}

/// All small API-only scenarios, each in its own repositories, pushed into one registry.
/// (They use disjoint repository names and seeds, so their expectations compose.)
pub fn all_small(reg: &Registry) -> Vec<Scenario> {
    vec![
        no_deletion_no_effect(reg),
        delete_manifest_if_tag_not_found(reg),
        deletion_has_effect(reg),
        deletion_with_shared_layer(reg),
        orphan_blob_deleted(reg),
        tagged_list_with_untagged_children(reg),
        untagged_list_with_untagged_children(reg),
        untagged_list_with_tagged_children(reg),
        tagged_list_with_deleted_references(reg, true),
    ]
}

// ---------------------------------------------------------------------------------------
// Scenarios that edit the tree on disk after pushing (the registry may keep running; the
// filesystem driver does not cache). Each records the edit in the model.

/// TestGCWithMissingManifests: an image in `testrepo`, then `_manifests` removed entirely.
/// Every blob is garbage in both modes.
pub fn missing_manifests(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "testrepo";
    let i = random_schema2(&mut p, repo, "testrepo/1");
    tree::remove_dir(&p.root, &format!("repositories/{repo}/_manifests"));
    let r = p.model.repo_mut(repo);
    r.revisions.clear();
    r.tags.clear();
    r.tag_index.clear();
    p.expect("image", &i, false, false);
    p.finish("missing_manifests")
}

/// TestGCWithUnusedLayerLinkPath: an untagged image; after a `-m` GC its blobs are gone and
/// its `_layers` links are dangling (a collector should remove them).
pub fn unused_layer_links(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "unusedlayerlink";
    let i = random_schema2(&mut p, repo, "unusedlayerlink/1");
    p.expect("image", &i, true, false);
    p.finish("unused_layer_links")
}

/// A tagged schema1 manifest written directly (2.8 refuses schema1 pushes), its layers
/// pushed through the API.
pub fn schema1_manifest(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "legacy/schema1";
    let layers = [layer_blob("schema1/0"), layer_blob("schema1/1")];
    let digests: Vec<String> = layers.iter().map(|l| p.blob(repo, l)).collect();
    let bytes = super::images::schema1_manifest_bytes(repo, "old", &digests);
    let m = p.write_manifest_direct(repo, Some("old"), super::images::MT_SCHEMA1_SIGNED, &bytes);
    let untagged_layer = layer_blob("schema1/untagged");
    let d = p.blob(repo, &untagged_layer);
    let bytes2 = super::images::schema1_manifest_bytes(repo, "gone", &[d]);
    let m2 = p.write_manifest_direct(repo, None, super::images::MT_SCHEMA1_SIGNED, &bytes2);
    p.expect_unservable("schema1:old", &m, true, true);
    p.expect_unservable("schema1@untagged", &m2, true, false);
    p.finish("schema1_manifest")
}

/// A tagged OCI manifest larger than 4 MiB (annotation padding), written directly; its
/// config and layers pushed through the API.
pub fn big_manifest(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "big/manifest";
    let img = Image::oci("big/1", 2);
    for b in img.blobs() {
        p.blob(repo, b);
    }
    let bytes = super::images::big_oci_manifest_bytes(&img, 4 * 1024 * 1024 + 1);
    let m = p.write_manifest_direct(repo, Some("big"), super::images::MT_OCI_MANIFEST, &bytes);
    p.expect_unservable("big:big", &m, true, true);
    p.finish("big_manifest")
}

/// A repository whose `_manifests/tags` directory is missing (one image pushed with a tag,
/// one by digest, then `tags/` removed): default keeps both; `-m` collects both.
pub fn repo_without_tags_dir(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "notags/repo";
    let a = p.image(repo, &Image::docker("notags/a", 2), Some("a"));
    let b = p.image(repo, &Image::oci("notags/b", 1), None);
    tree::remove_dir(&p.root, &format!("repositories/{repo}/_manifests/tags"));
    p.model.repo_mut(repo).tags.clear();
    p.model.repo_mut(repo).tag_index.clear();
    p.expect("a", &a, true, false);
    p.expect("b", &b, true, false);
    p.note("2.8.2 --delete-untagged aborts on this repository");
    p.finish("repo_without_tags_dir")
}

/// A tagged image whose tag `current/link` and revision link get a trailing newline.
/// Both must still be honoured: the image survives both modes.
pub fn trailing_newline_links(reg: &Registry) -> Scenario {
    let mut p = Pusher::new(reg);
    let repo = "newline/repo";
    let a = p.image(repo, &Image::docker("newline/a", 2), Some("latest"));
    tree::append_newline(&p.root, &tree::tag_current_link_key(repo, "latest"));
    tree::append_newline(&p.root, &tree::revision_link_key(repo, &a.digest));
    p.expect_unservable("latest", &a, true, true);
    p.finish("trailing_newline_links")
}

/// All disk-edit scenarios, each in its own repositories, in one registry.
pub fn all_disk_edits(reg: &Registry) -> Vec<Scenario> {
    vec![
        missing_manifests(reg),
        unused_layer_links(reg),
        schema1_manifest(reg),
        big_manifest(reg),
        repo_without_tags_dir(reg),
        trailing_newline_links(reg),
    ]
}

/// Merges scenarios pushed into the same registry into one (models unioned).
pub fn merge(name: &str, parts: Vec<Scenario>) -> Scenario {
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("merge of no scenarios");
    for r in &mut acc.images {
        r.label = format!("{}/{}", acc.name, r.label);
    }
    acc.name = name.to_string();
    for s in it {
        for (repo, st) in s.model.repos {
            let r = acc.model.repos.entry(repo).or_default();
            r.revisions.extend(st.revisions);
            r.tags.extend(st.tags);
            r.tag_index.extend(st.tag_index);
            r.layer_links.extend(st.layer_links);
            r.uploads.extend(st.uploads);
        }
        acc.model.manifests.extend(s.model.manifests);
        acc.model.blobs.extend(s.model.blobs);
        acc.images.extend(s.images.into_iter().map(|mut r| {
            r.label = format!("{}/{}", s.name, r.label);
            r
        }));
        acc.orphan_blobs.extend(s.orphan_blobs);
        acc.uploads.extend(s.uploads);
        acc.notes.extend(s.notes);
    }
    acc.verify_consistency();
    acc
}

/// Blob digests in `kept` that are not in `model` (helper for messages).
pub fn describe_set(set: &BTreeSet<String>) -> String {
    set.iter()
        .map(|d| &d[..19.min(d.len())])
        .collect::<Vec<_>>()
        .join(", ")
}

/// repo -> tags from the model (for comparisons with `http::list_tags`).
pub fn model_tags(model: &Model) -> BTreeMap<String, Vec<String>> {
    model
        .repos
        .iter()
        .map(|(n, r)| (n.clone(), r.tags.keys().cloned().collect()))
        .collect()
}
