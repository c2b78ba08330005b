//! A blocking client for the parts of the Registry HTTP API v2 the tests need.
//!
//! `base` is always the registry's base URL as returned by `Registry::url()`
//! (`http://127.0.0.1:<port>`, no trailing slash). Push helpers panic with a clear message
//! on any unexpected answer (they build fixtures); `try_*` variants and `pull_verify`
//! return `Result` for tests that expect failures.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use super::images::{sha256_digest, ALL_MANIFEST_TYPES};

/// Accept header listing the four manifest media types.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// An HTTP answer of any status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// Case-insensitive header lookup.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .redirects(5)
        .build()
}

/// Sends one request and returns the answer whatever its status; Err only on transport errors.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body_bytes = Vec::new();
    if method != "HEAD" {
        resp.into_reader()
            .read_to_end(&mut body_bytes)
            .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    }
    Ok(Resp {
        status,
        headers,
        body: body_bytes,
    })
}

fn must(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>, want: u16) -> Resp {
    let r = send(method, url, headers, body).unwrap_or_else(|e| panic!("{e}"));
    if r.status != want {
        panic!(
            "{method} {url}: expected HTTP {want}, got {}: {}",
            r.status,
            r.text()
        );
    }
    r
}

/// Resolves a Location header that may be absolute or relative to `base`.
pub fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// Appends `key=value` to a URL that may already have a query string.
pub fn append_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let enc: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{url}{sep}{key}={enc}")
}

fn start_upload(base: &str, repo: &str) -> (String, String) {
    let url = format!("{base}/v2/{repo}/blobs/uploads/");
    let r = must("POST", &url, &[], None, 202);
    let loc = r
        .header("Location")
        .unwrap_or_else(|| panic!("POST {url}: 202 without Location header"))
        .to_string();
    let uuid = r
        .header("Docker-Upload-UUID")
        .unwrap_or_else(|| panic!("POST {url}: 202 without Docker-Upload-UUID header"))
        .to_string();
    (resolve_location(base, &loc), uuid)
}

/// Uploads `bytes` as one blob into `repo` (POST, then monolithic PUT `?digest=`).
/// Returns `sha256:<hex>`; panics unless the registry answers 201 with that digest.
pub fn upload_blob(base: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let (loc, _uuid) = start_upload(base, repo);
    let url = append_query(&loc, "digest", &digest);
    let r = must(
        "PUT",
        &url,
        &[("Content-Type", "application/octet-stream")],
        Some(bytes),
        201,
    );
    if let Some(d) = r.header("Docker-Content-Digest") {
        assert_eq!(
            d, digest,
            "blob upload to {repo}: registry reports another digest"
        );
    }
    digest
}

/// HEAD /v2/<repo>/blobs/<digest> answered 200.
pub fn blob_exists(base: &str, repo: &str, digest: &str) -> bool {
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let r = send("HEAD", &url, &[], None).unwrap_or_else(|e| panic!("{e}"));
    r.status == 200
}

/// GET a blob; Err names repo and digest on any non-200.
pub fn get_blob(base: &str, repo: &str, digest: &str) -> Result<Vec<u8>, String> {
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let r = send("GET", &url, &[], None)?;
    if r.status != 200 {
        return Err(format!(
            "GET blob {repo}@{digest}: HTTP {}: {}",
            r.status,
            r.text()
        ));
    }
    Ok(r.body)
}

/// PUT a manifest by tag or by digest; returns the Err text on any non-201 answer.
/// On success returns the digest, after checking that the registry's Docker-Content-Digest
/// equals the sha256 of `bytes`.
pub fn try_put_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<String, String> {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let r = send("PUT", &url, &[("Content-Type", media_type)], Some(bytes))?;
    if r.status != 201 {
        return Err(format!(
            "PUT manifest {repo}:{reference} ({media_type}): HTTP {}: {}",
            r.status,
            r.text()
        ));
    }
    let want = sha256_digest(bytes);
    let got = r.header("Docker-Content-Digest").ok_or_else(|| {
        format!("PUT manifest {repo}:{reference}: 201 without Docker-Content-Digest")
    })?;
    if got != want {
        return Err(format!(
            "PUT manifest {repo}:{reference}: Docker-Content-Digest {got} != sha256 of the bytes {want}"
        ));
    }
    Ok(want)
}

/// [`try_put_manifest`] that panics on failure.
pub fn put_manifest(
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    try_put_manifest(base, repo, reference, media_type, bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// A fetched manifest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// The Docker-Content-Digest header, if sent.
    pub digest_header: Option<String>,
}

/// GET /v2/<repo>/manifests/<reference> accepting all four manifest types.
pub fn get_manifest(base: &str, repo: &str, reference: &str) -> Result<FetchedManifest, String> {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let r = send("GET", &url, &[("Accept", ACCEPT_ALL_MANIFESTS)], None)?;
    if r.status != 200 {
        return Err(format!(
            "GET manifest {repo}:{reference}: HTTP {}: {}",
            r.status,
            r.text()
        ));
    }
    Ok(FetchedManifest {
        content_type: r.header("Content-Type").map(str::to_string),
        digest_header: r.header("Docker-Content-Digest").map(str::to_string),
        bytes: r.body,
    })
}

/// DELETE /v2/<repo>/manifests/<digest>; panics unless 202.
/// In 2.8.2 this removes the revision link file (its directory stays, empty) and every
/// tag directory whose current link points at the digest; blobs stay.
pub fn delete_manifest(base: &str, repo: &str, digest: &str) {
    let url = format!("{base}/v2/{repo}/manifests/{digest}");
    must("DELETE", &url, &[], None, 202);
}

/// Starts an upload and sends `bytes` with one PATCH, never completing it.
/// Returns the upload uuid (`_uploads/<uuid>/` in the repo).
pub fn start_abandoned_upload(base: &str, repo: &str, bytes: &[u8]) -> String {
    let (loc, uuid) = start_upload(base, repo);
    if !bytes.is_empty() {
        let r = must(
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream")],
            Some(bytes),
            202,
        );
        if let Some(u) = r.header("Docker-Upload-UUID") {
            assert_eq!(u, uuid, "upload uuid changed between POST and PATCH");
        }
    }
    uuid
}

/// Tags of a repository, sorted. A repository without tags answers 404 in 2.8; that is
/// returned as an empty list.
pub fn list_tags(base: &str, repo: &str) -> Vec<String> {
    let url = format!("{base}/v2/{repo}/tags/list");
    let r = send("GET", &url, &[], None).unwrap_or_else(|e| panic!("{e}"));
    if r.status == 404 {
        return Vec::new();
    }
    if r.status != 200 {
        panic!("GET {url}: HTTP {}: {}", r.status, r.text());
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("GET {url}: bad JSON {e}: {}", r.text()));
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// GET /v2/_catalog (up to 10000 names).
pub fn catalog(base: &str) -> Vec<String> {
    let url = format!("{base}/v2/_catalog?n=10000");
    let r = must("GET", &url, &[], None, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("catalog JSON");
    v["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Pulls `repo:reference` like a client would and verifies every byte:
/// the manifest's sha256 equals the requested digest (or the Docker-Content-Digest header
/// for a tag), children of lists/indexes are fetched by digest recursively (sizes checked
/// against their descriptors), every config and layer blob is fetched and its sha256 and
/// size checked. Foreign layers (descriptors with `urls`) are skipped; `subject` is not
/// followed. Returns every digest verified (manifests and blobs, first-seen order).
pub fn pull_verify(base: &str, repo: &str, reference: &str) -> Result<Vec<String>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    verify_manifest(base, repo, reference, reference, None, &mut seen, &mut out)?;
    Ok(out)
}

fn verify_manifest(
    base: &str,
    repo: &str,
    top: &str,
    reference: &str,
    expected_size: Option<u64>,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<String>,
) -> Result<(), String> {
    let ctx = |msg: String| format!("pull_verify {repo}:{top}: manifest {reference}: {msg}");
    let m = get_manifest(base, repo, reference).map_err(&ctx)?;
    let actual = sha256_digest(&m.bytes);
    if reference.starts_with("sha256:") && actual != reference {
        return Err(ctx(format!("content hashes to {actual}")));
    }
    if let Some(h) = &m.digest_header {
        if *h != actual {
            return Err(ctx(format!(
                "Docker-Content-Digest {h} but content hashes to {actual}"
            )));
        }
    }
    if let Some(sz) = expected_size {
        if sz != m.bytes.len() as u64 {
            return Err(ctx(format!(
                "descriptor size {sz} but {} bytes served",
                m.bytes.len()
            )));
        }
    }
    if !seen.insert(actual.clone()) {
        return Ok(());
    }
    out.push(actual.clone());
    let v: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| ctx(format!("{actual} is not JSON: {e}")))?;
    let media_type = v["mediaType"]
        .as_str()
        .map(str::to_string)
        .or(m.content_type.clone())
        .unwrap_or_default();
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            let d = c["digest"]
                .as_str()
                .ok_or_else(|| ctx(format!("{actual}: child without digest")))?;
            verify_manifest(base, repo, top, d, c["size"].as_u64(), seen, out)
                .map_err(|e| format!("{e} (child of {actual})"))?;
        }
        return Ok(());
    }
    let mut descs: Vec<&serde_json::Value> = Vec::new();
    if v["config"].is_object() {
        descs.push(&v["config"]);
    }
    if let Some(layers) = v["layers"].as_array() {
        descs.extend(layers.iter());
    }
    if descs.is_empty() && !ALL_MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ctx(format!(
            "{actual}: unknown manifest shape ({media_type})"
        )));
    }
    for d in descs {
        if d["urls"].as_array().map(|u| !u.is_empty()).unwrap_or(false) {
            continue; // foreign layer
        }
        let dg = d["digest"]
            .as_str()
            .ok_or_else(|| ctx(format!("{actual}: descriptor without digest")))?;
        if seen.contains(dg) {
            continue;
        }
        let bytes = get_blob(base, repo, dg).map_err(|e| ctx(format!("{actual}: {e}")))?;
        let got = sha256_digest(&bytes);
        if got != dg {
            return Err(ctx(format!("{actual}: blob {dg} content hashes to {got}")));
        }
        if let Some(sz) = d["size"].as_u64() {
            if sz != bytes.len() as u64 {
                return Err(ctx(format!(
                    "{actual}: blob {dg} descriptor size {sz}, got {} bytes",
                    bytes.len()
                )));
            }
        }
        seen.insert(dg.to_string());
        out.push(dg.to_string());
    }
    Ok(())
}
