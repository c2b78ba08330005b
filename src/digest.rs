//! Content digests as the registry stores them: `sha256:<64 lowercase hex>`.
//!
//! Digests are kept as 32 raw bytes so that inventories of millions of keys stay
//! small; the text form is produced only when a key or a report needs it.

use std::fmt;
use std::str::FromStr;

/// The value of each lowercase hex digit, `0xff` for any other byte: every
/// listed key's digest is parsed, a million of them in a large registry.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// A sha256 digest. Other algorithms are rare in registries (a blob pushed under
/// sha512 is stored under its sha256 and only *linked* under sha512) and are
/// handled by the layout as "alternate links", not with this type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} does not start with \"sha256:\"")]
    Algorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex characters after \"sha256:\"")]
    Hex(String),
}

impl Digest {
    /// The digest a link file holds (`sha256:<hex>`, surrounding whitespace
    /// tolerated), if its bytes are one.
    pub fn from_link(bytes: &[u8]) -> Option<Digest> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the 64 lowercase hex characters of a sha256 (no `sha256:` prefix),
    /// as they appear in storage paths. Uppercase is refused: the registry never
    /// writes it, and a path with it is not one the registry can serve.
    pub fn from_hex(hex_str: &str) -> Option<Self> {
        let hex = hex_str.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
            if (hi | lo) > 0xf {
                return None;
            }
            *byte = hi << 4 | lo;
        }
        Some(Digest(out))
    }

    pub fn hex(&self) -> String {
        self.hex_digits().as_str().to_owned()
    }

    /// The 64 hex digits on the stack, for building keys: a collection builds
    /// one per manifest it reads and per deletion it plans, hundreds of
    /// thousands in a large registry (`hex::encode` pushed them a `char` at a
    /// time into a new `String`, 1% of a million-key run's CPU).
    pub fn hex_digits(&self) -> HexDigits {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[(byte >> 4) as usize];
            pair[1] = DIGITS[(byte & 0xf) as usize];
        }
        HexDigits(out)
    }

    /// Scans arbitrary bytes for every `sha256:<64 hex>` they contain. Used to pin
    /// the references of a manifest that cannot be parsed: keeping too much is
    /// safe, deleting a blob it needs is not.
    pub fn scan_all(bytes: &[u8]) -> Vec<Digest> {
        const PREFIX: &[u8] = b"sha256:";
        let mut found = Vec::new();
        let mut i = 0;
        while i + PREFIX.len() + 64 <= bytes.len() {
            if &bytes[i..i + PREFIX.len()] == PREFIX {
                let start = i + PREFIX.len();
                if let Ok(s) = std::str::from_utf8(&bytes[start..start + 64]) {
                    if let Some(d) = Digest::from_hex(&s.to_ascii_lowercase()) {
                        found.push(d);
                        i = start + 64;
                        continue;
                    }
                }
            }
            i += 1;
        }
        found.sort();
        found.dedup();
        found
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// Parses `sha256:<hex>`. Surrounding whitespace is tolerated because link
    /// files written by hand or by other tools sometimes end with a newline
    /// (distribution #2650 aborts on that; we do not).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hex_part = t
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::Algorithm(s.to_string()))?;
        Digest::from_hex(hex_part).ok_or_else(|| DigestError::Hex(s.to_string()))
    }
}

/// A digest's 64 lowercase hex digits (`Digest::hex_digits`).
#[derive(Clone, Copy)]
pub struct HexDigits([u8; 64]);

impl HexDigits {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Display for HexDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex_digits())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex_digits().as_str()[..12])
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn parses_and_prints_round_trip() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(d.hex(), HEX);
        assert_eq!(format!("{:?}", d), format!("sha256:{}", &HEX[..12]));
    }

    #[test]
    fn hex_digits_of_every_byte_value() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 8 + 7) as u8);
        let d = Digest::from_bytes(bytes);
        assert_eq!(d.hex_digits().as_str(), hex::encode(bytes));
        for b in 0..=255u8 {
            let d = Digest::from_bytes([b; 32]);
            assert_eq!(d.hex(), hex::encode([b; 32]));
            assert_eq!(Digest::from_hex(&d.hex()), Some(d));
        }
    }

    #[test]
    fn tolerates_trailing_newline_in_link_content() {
        let d: Digest = format!("sha256:{HEX}\n").parse().unwrap();
        assert_eq!(d.hex(), HEX);
    }

    #[test]
    fn refuses_other_algorithms_uppercase_and_short_hex() {
        assert!(matches!(
            format!("sha512:{HEX}").parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
        assert!(format!("sha256:{}", HEX.to_uppercase())
            .parse::<Digest>()
            .is_err());
        assert!("sha256:abcd".parse::<Digest>().is_err());
        assert!(Digest::from_hex(&HEX[..63]).is_none());
        assert!(Digest::from_hex(&format!("{}g", &HEX[..63])).is_none());
    }

    #[test]
    fn scan_finds_every_digest_once() {
        let text = format!("{{\"a\":\"sha256:{HEX}\",\"b\":[\"sha256:{HEX}\"],\"c\":\"sha256:{}\" junk sha256:12}}", "0".repeat(64));
        let found = Digest::scan_all(text.as_bytes());
        assert_eq!(found.len(), 2);
        assert!(found.contains(&Digest::from_hex(HEX).unwrap()));
    }
}
