//! Keeps secrets out of messages: error texts from HTTP clients can carry signed
//! URLs (an Azure SAS `sig=`, S3 presigned `X-Amz-Signature=`, OAuth tokens).

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "sig=",
    "x-amz-signature=",
    "x-amz-credential=",
    "x-amz-security-token=",
    "access_token=",
    "token=",
];

/// Replaces the value of every secret query parameter in `text` with `REDACTED`.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hit = SECRET_PARAMS.iter().find(|p| {
            lower[i..].starts_with(*p)
                && (i == 0 || matches!(text.as_bytes()[i - 1], b'?' | b'&' | b' ' | b'"'))
        });
        match hit {
            Some(p) => {
                out.push_str(&text[i..i + p.len()]);
                out.push_str("REDACTED");
                i += p.len();
                while i < text.len()
                    && !matches!(
                        text.as_bytes()[i],
                        b'&' | b' ' | b'"' | b'\'' | b')' | b'\n'
                    )
                {
                    i += 1;
                }
            }
            None => {
                let ch = text[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn removes_signatures_and_tokens_keeps_the_rest() {
        let msg = "error sending request for url (https://acct.blob.core.windows.net/c/k?sv=2021&sig=abc%2Fdef&se=x): timed out";
        assert_eq!(redact(msg), "error sending request for url (https://acct.blob.core.windows.net/c/k?sv=2021&sig=REDACTED&se=x): timed out");
        let s3 =
            "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA123&X-Amz-Signature=f00d failed";
        assert_eq!(redact(s3), "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED failed");
        assert_eq!(redact("design=ok signal"), "design=ok signal");
    }
}
