//! What a file is, judged by its leading bytes. The declared `Content-Type` is the client's
//! claim; these bytes are the evidence. An upload is accepted only when the evidence names an
//! allowed type and does not contradict the claim.

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_LEN: usize = 512;

pub use crate::media_types::RECOGNISED;

/// The type of a file that starts with `head`, or `None` when it is none we recognise
/// (executables, archives of other kinds, arbitrary binary data).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
    ];
    if let Some((_, kind)) = SIGNATURES.iter().find(|(sig, _)| head.starts_with(sig)) {
        return Some(kind);
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    if !head.is_empty() && looks_like_text(head) {
        return Some("text/plain");
    }
    None
}

/// UTF-8 without control characters other than whitespace. The prefix may end inside a
/// multi-byte character, which is not evidence of binary data.
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

/// The media type a client declared, without parameters, lowercased; `None` when it declared
/// nothing useful (absent, or the generic `application/octet-stream`).
pub fn declared(content_type: Option<&str>) -> Option<String> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/octet-stream" => None,
        // A common misspelling that means the same thing.
        "image/jpg" => Some("image/jpeg".into()),
        _ => Some(essence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_type_by_its_signature() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some("image/png")),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", Some("image/jpeg")),
            (b"GIF89a\x01\0\x01\0", Some("image/gif")),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"%PDF-1.7\n", Some("application/pdf")),
            (b"PK\x03\x04\x14\0", Some("application/zip")),
            (b"hello, world\n", Some("text/plain")),
            ("caf\u{e9} cr\u{e8}me".as_bytes(), Some("text/plain")),
            (b"\x7fELF\x02\x01\x01", None),
            (b"MZ\x90\0\x03", None),
            (b"text with a \0 byte", None),
            (b"", None),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), *expected, "{head:?}");
        }
    }

    #[test]
    fn text_cut_inside_a_character_is_still_text() {
        let s = "d\u{e9}j\u{e0} vu".as_bytes();
        // Cut in the middle of the two-byte 'à'.
        assert_eq!(sniff(&s[..4]), Some("text/plain"));
        // An invalid byte in the middle is not text.
        assert_eq!(sniff(b"ab\xffcd"), None);
    }

    #[test]
    fn declared_types_are_normalised() {
        assert_eq!(
            declared(Some("Image/PNG; charset=x")),
            Some("image/png".into())
        );
        assert_eq!(declared(Some("image/jpg")), Some("image/jpeg".into()));
        assert_eq!(declared(Some("application/octet-stream")), None);
        assert_eq!(declared(None), None);
    }
}
