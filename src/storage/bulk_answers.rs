//! A check between object_store and the network: the answer to a bulk delete
//! (S3 DeleteObjects, Azure Blob Batch) must account for every key it was
//! sent, each once.
//!
//! object_store reads those answers starting from "every key deleted" and
//! filling in the errors it finds: a key the answer leaves out (an S3
//! `DeleteResult` without its `<Deleted>` entry, a Blob Batch answer with
//! fewer parts than deletes) reads as deleted, though nothing says it was,
//! and an error for a key it was not sent (an S3 `<Key>` spelled otherwise,
//! a Blob Batch `Content-ID` past the last delete) panics in its parser,
//! which ends the run with no report. The sweep starts a phase only once
//! the one before is done (no blob is deleted while a link to it may stay),
//! so a delete taken for done must have been answered. An answer that does
//! not account for every key is refused here as unreadable: the request's
//! keys all fail, the sweep retries them (a key already gone counts as
//! done), and what still fails is reported.

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::ClientOptions;

/// object_store's own HTTP client (reqwest), with bulk delete answers checked.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckedBulkDeletes;

impl HttpConnector for CheckedBulkDeletes {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Checked(inner)))
    }
}

#[derive(Debug)]
struct Checked(HttpClient);

/// An answer that does not account for each key of its request, once.
#[derive(Debug, thiserror::Error)]
#[error("{0}; none of its keys is taken for deleted")]
struct Unaccounted(String);

/// What a bulk delete request was sent.
enum Sent {
    /// S3 DeleteObjects: its keys, unescaped.
    S3(Vec<String>),
    /// Azure Blob Batch: how many deletes.
    Azure(usize),
}

#[async_trait]
impl HttpService for Checked {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let Some(sent) = bulk_delete(&req) else {
            return self.0.execute(req).await;
        };
        let response = self.0.execute(req).await?;
        // an error status fails every key already
        if !response.status().is_success() {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let body = body.bytes().await?;
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let unaccounted = match &sent {
            Sent::S3(keys) => s3_unaccounted(keys, &String::from_utf8_lossy(&body)),
            Sent::Azure(n) => azure_unaccounted(*n, content_type, &body),
        };
        if let Some(why) = unaccounted {
            // not retried by object_store (a decode error): the sweep retries
            return Err(HttpError::new(HttpErrorKind::Decode, Unaccounted(why)));
        }
        Ok(HttpResponse::from_parts(parts, body.into()))
    }
}

/// The bulk delete `req` is, if it is one whose body is at hand.
fn bulk_delete(req: &HttpRequest) -> Option<Sent> {
    if req.method().as_str() != "POST" {
        return None;
    }
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| query.split('&').any(|q| q == name);
    let body = req.body().as_bytes()?;
    if param("delete") {
        let keys = keys_in(&String::from_utf8_lossy(body));
        return Some(Sent::S3(keys));
    }
    if param("comp=batch") {
        let boundary = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.split_once("boundary="))
            .map(|(_, b)| b.trim_matches('"').to_string())?;
        let marker = format!("--{boundary}\r\n");
        let n = body
            .windows(marker.len())
            .filter(|w| *w == marker.as_bytes())
            .count();
        return Some(Sent::Azure(n));
    }
    None
}

/// Why a DeleteObjects answer does not account for each of `keys` once, if
/// it does not. An answer that object_store retries as an error (S3's 200
/// with `InternalError` or `SlowDown` in it) is left to it.
fn s3_unaccounted(keys: &[String], body: &str) -> Option<String> {
    if body.contains("InternalError") || body.contains("SlowDown") {
        return None;
    }
    let mut sent = keys.to_vec();
    let mut answered = keys_in(body);
    sent.sort();
    answered.sort();
    if sent == answered {
        return None;
    }
    let missing = sent
        .iter()
        .filter(|k| answered.binary_search(k).is_err())
        .count();
    Some(format!(
        "the DeleteObjects answer does not account for each of the {} keys sent, once: it has {} results, \
         and {missing} keys sent have none (a store that does not answer each key can be collected with \
         `-o disable_bulk_delete=true`, a DELETE per key)",
        sent.len(),
        answered.len()
    ))
}

/// Why a Blob Batch answer does not account for each of `n` deletes once
/// (their `Content-ID`s are 0 to n-1), if it does not. An answer object_store
/// fails as a whole anyway (a part without a `Content-ID`, a body it cannot
/// parse) is left to it.
fn azure_unaccounted(n: usize, content_type: &str, body: &[u8]) -> Option<String> {
    let boundary = content_type.split_once("boundary=")?.1.trim_matches('"');
    let body = String::from_utf8_lossy(body);
    let mut ids = Vec::new();
    // the text before the first marker is none of the parts; after the
    // closing marker (`--boundary--`) there are none
    for part in body.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let head = part.split("\r\n\r\n").next().unwrap_or_default();
        let id = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-id")
                .then(|| value.trim().parse::<usize>().ok())
        });
        match id {
            Some(Some(id)) => ids.push(id),
            _ => return None,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    if sorted == (0..n).collect::<Vec<_>>() {
        return None;
    }
    Some(format!(
        "the Blob Batch answer does not account for each of the {n} deletes sent, once: it has {} parts, \
         with Content-IDs {ids:?}",
        ids.len()
    ))
}

/// What an S3 `DeleteResult` answer says of each key it names: `None` for
/// deleted, else its error (`code: message`). Empty for any other answer.
pub fn delete_result_entries(xml: &str) -> Vec<(String, Option<String>)> {
    if !xml.contains("<DeleteResult") {
        return Vec::new();
    }
    let text_of = |block: &str, tag: &str| {
        let open = format!("<{tag}>");
        let start = block.find(&open)? + open.len();
        let end = block[start..].find(&format!("</{tag}>"))? + start;
        Some(unescape(&block[start..end]))
    };
    let mut entries = Vec::new();
    let mut rest = xml;
    loop {
        let next = ["<Deleted>", "<Error>"]
            .iter()
            .filter_map(|open| rest.find(open).map(|at| (at, *open)))
            .min();
        let Some((at, open)) = next else { break };
        let close = format!("</{}", &open[1..]);
        let Some(len) = rest[at..].find(&close) else {
            break;
        };
        let block = &rest[at..at + len];
        if let Some(key) = text_of(block, "Key") {
            let error = (open == "<Error>").then(|| {
                let code = text_of(block, "Code").unwrap_or_default();
                let message = text_of(block, "Message").unwrap_or_default();
                format!("{code}: {message}")
            });
            entries.push((key, error));
        }
        rest = &rest[at + len..];
    }
    entries
}

/// The text of every `<Key>` element in `xml`, unescaped.
fn keys_in(xml: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Key>") {
        rest = &rest[start + "<Key>".len()..];
        let Some(end) = rest.find("</Key>") else {
            break;
        };
        keys.push(unescape(&rest[..end]));
        rest = &rest[end..];
    }
    keys
}

/// XML text with its entity and character references replaced (a reference
/// it cannot read is kept as it is, so that it still differs from any key).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let name = &rest[1..semi];
        let c = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => name
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| name.strip_prefix('#').map(|d| d.parse::<u32>()))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_unescaped_whatever_the_escaping() {
        let xml = "<Delete><Object><Key>r/a&amp;b&lt;c&gt;&apos;&quot;</Key></Object>\
                   <Object><Key>r/&#38;&#x3C;</Key></Object><Object><Key>r/&bogus;</Key></Object></Delete>";
        assert_eq!(keys_in(xml), ["r/a&b<c>'\"", "r/&<", "r/&bogus;"]);
    }

    #[test]
    fn an_s3_answer_must_name_each_key_sent_once() {
        let sent = vec!["r/a&b".to_string(), "r/c".to_string()];
        let deleted = |k: &str| format!("<Deleted><Key>{k}</Key></Deleted>");
        let answer =
            |entries: &[String]| format!("<DeleteResult>{}</DeleteResult>", entries.concat());
        let error = "<Error><Key>r/c</Key><Code>AccessDenied</Code><Message>no</Message></Error>";
        assert_eq!(
            s3_unaccounted(&sent, &answer(&[deleted("r/a&amp;b"), deleted("r/c")])),
            None
        );
        assert_eq!(
            s3_unaccounted(&sent, &answer(&[error.into(), deleted("r/a&#38;b")])),
            None
        );
        for wrong in [
            answer(&[]),
            answer(&[deleted("r/c")]),
            answer(&[deleted("r/c"), deleted("r/c")]),
            answer(&[deleted("r/a&amp;b"), deleted("r/x")]),
            "<Foo/>".to_string(),
        ] {
            assert!(s3_unaccounted(&sent, &wrong).is_some(), "{wrong}");
        }
        // retried by object_store as an error, whatever else it says
        let retried = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        assert_eq!(s3_unaccounted(&sent, retried), None);
    }

    #[test]
    fn a_delete_result_says_what_became_of_each_key() {
        let xml = "<?xml version=\"1.0\"?><DeleteResult><Deleted><Key>r/a&amp;b</Key></Deleted>\
                   <Error><Key>r/c</Key><Code>InternalError</Code><Message>try again</Message></Error>\
                   <Deleted><Key>r/d</Key><VersionId>1</VersionId></Deleted></DeleteResult>";
        assert_eq!(
            delete_result_entries(xml),
            [
                ("r/a&b".to_string(), None),
                (
                    "r/c".to_string(),
                    Some("InternalError: try again".to_string())
                ),
                ("r/d".to_string(), None),
            ]
        );
        // the whole request's error names no key
        let whole = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        assert!(delete_result_entries(whole).is_empty());
    }

    #[test]
    fn a_blob_batch_answer_must_have_each_content_id_once() {
        let part = |id: Option<usize>, status: &str| {
            let id = id
                .map(|i| format!("Content-ID: {i}\r\n"))
                .unwrap_or_default();
            format!("--b\r\nContent-Type: application/http\r\n{id}\r\nHTTP/1.1 {status}\r\nx-ms-request-id: x\r\n\r\n")
        };
        let answer = |parts: &[String]| format!("{}--b--\r\n", parts.concat());
        let ct = "multipart/mixed; boundary=b";
        let ok = answer(&[
            part(Some(1), "404 Not Found"),
            part(Some(0), "202 Accepted"),
        ]);
        assert_eq!(azure_unaccounted(2, ct, ok.as_bytes()), None);
        for wrong in [
            answer(&[part(Some(0), "202 Accepted")]),
            answer(&[part(Some(0), "202 Accepted"), part(Some(0), "202 Accepted")]),
            answer(&[part(Some(0), "202 Accepted"), part(Some(2), "202 Accepted")]),
        ] {
            assert!(
                azure_unaccounted(2, ct, wrong.as_bytes()).is_some(),
                "{wrong}"
            );
        }
        // a whole batch refused: object_store fails it
        let refused = answer(&[part(None, "400 Bad Request")]);
        assert_eq!(azure_unaccounted(2, ct, refused.as_bytes()), None);
    }
}
