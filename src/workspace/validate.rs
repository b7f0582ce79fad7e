//! Input rules of the workspace's fields, one function per kind of value (the request types
//! apply them in their `Validate`, so one 422 names every bad field). Lengths are counted as
//! sent, like the account rules, so the OpenAPI document's `maxLength` means the same.

pub use crate::accounts::validate::{email, name};

pub const SLUG_MAX: usize = 40;
pub const TITLE_MAX: usize = 200;
pub const PROJECT_DESCRIPTION_MAX: usize = 2000;
/// Task descriptions and comments. Small enough that the longest such text, JSON-escaped at
/// its worst (12 bytes a character, `\uXXXX\uXXXX`), still fits the 64 KiB body limit of
/// JSON routes: a text too long is then a 422 naming its field, never a 413. (The tables allow
/// 10,000 characters, room for raising this without a migration.)
pub const TEXT_MAX: usize = 4_000;

/// The rule of [`slug`] as the document's `pattern`.
pub const SLUG_PATTERN: &str = "^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$";

/// Lower-case letters, digits and inner hyphens, 1 to 40 characters.
pub fn slug(slug: &str) -> Result<(), &'static str> {
    let bytes = slug.as_bytes();
    let ok = (1..=SLUG_MAX).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 40 lower-case letters, digits or inner hyphens")
    }
}

/// A one-line title: trimmed, not blank, no control characters, at most `max` characters.
pub fn title(value: &mut String, max: usize) -> Result<(), &'static str> {
    if value.chars().count() > max {
        return Err("is too long");
    }
    let trimmed = value.trim();
    if trimmed.len() != value.len() {
        *value = trimmed.to_owned();
    }
    if value.is_empty() {
        Err("must not be empty")
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(())
    }
}

/// Free text (descriptions): at most `max` characters; line breaks allowed.
pub fn text(value: &str, max: usize) -> Result<(), &'static str> {
    if value.chars().count() > max {
        Err("is too long")
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        Err("must not contain control characters other than line breaks and tabs")
    } else {
        Ok(())
    }
}

/// A comment: free text, not blank.
pub fn body(value: &str) -> Result<(), &'static str> {
    text(value, TEXT_MAX)?;
    if value.trim().is_empty() {
        Err("must not be empty")
    } else {
        Ok(())
    }
}

/// A calendar date, `YYYY-MM-DD`.
pub fn date(value: &str) -> Result<time::Date, &'static str> {
    const MESSAGE: &str = "must be a date, YYYY-MM-DD";
    let b = value.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape {
        return Err(MESSAGE);
    }
    let number = |s: &str| s.parse::<u16>().map_err(|_| MESSAGE);
    let (y, m, d) = (
        number(&value[..4])?,
        number(&value[5..7])?,
        number(&value[8..])?,
    );
    let month =
        time::Month::try_from(u8::try_from(m).map_err(|_| MESSAGE)?).map_err(|_| MESSAGE)?;
    time::Date::from_calendar_date(i32::from(y), month, u8::try_from(d).map_err(|_| MESSAGE)?)
        .map_err(|_| MESSAGE)
}

/// `YYYY-MM-DD`, the form [`date`] reads.
pub fn format_date(date: time::Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "acme", "acme-2", &"a".repeat(40)] {
            assert!(slug(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Acme", "a b", "é", &"a".repeat(41)] {
            assert!(slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        let d = date("2026-02-28").expect("valid");
        assert_eq!(format_date(d), "2026-02-28");
        for bad in [
            "2026-02-30",
            "2026-2-28",
            "tomorrow",
            "2026-13-01",
            "+026-01-01",
        ] {
            assert!(date(bad).is_err(), "{bad}");
        }
    }
}
