//! Input rules for accounts, one function per kind of value. Each answers `Err(message)` for
//! the field it is applied to; the request types apply them in their `Validate` (see
//! `http::json`), so one answer can name every bad field.

pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 128;
pub const NAME_MAX: usize = 100;
pub const EMAIL_MAX: usize = 254;

// Lengths are counted as sent, before trimming: the limits the OpenAPI document states
// (`maxLength`) then mean the same to every client.

/// Trims the address in place; its case is kept (uniqueness ignores case).
pub fn email(email: &mut String) -> Result<(), &'static str> {
    if email.chars().count() > EMAIL_MAX {
        return Err("must be at most 254 characters");
    }
    trim(email);
    if !email_address::EmailAddress::is_valid(email) || !email.contains('.') {
        Err("is not a valid email address")
    } else {
        Ok(())
    }
}

/// The rule of [`name`] as the document's `pattern` (ECMA-262, what JSON Schema uses): any
/// whitespace `str::trim` removes, then at least one character that is neither whitespace nor
/// a control character, and no control character between the first and last of those.
pub const NAME_PATTERN: &str = concat!(
    r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    r"(?:[^\u0000-\u001F\u007F-\u009F]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?",
    r"[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
);

/// Trims the name in place.
pub fn name(name: &mut String) -> Result<(), &'static str> {
    if name.chars().count() > NAME_MAX {
        return Err("must be at most 100 characters");
    }
    trim(name);
    if name.is_empty() {
        Err("must not be empty")
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(())
    }
}

/// A password being chosen. Length is the policy (NIST 800-63B): long passphrases beat
/// composition rules.
pub fn new_password(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        Err("must be at least 12 characters")
    } else {
        entered_password(password)
    }
}

/// A password entered to prove who the caller is. Only the upper bound applies: a longer one
/// cannot be right, and hashing it would cost for nothing. The lower bound is left out so that
/// a short guess is the same wrong password as any other.
pub fn entered_password(password: &str) -> Result<(), &'static str> {
    if password.chars().count() > PASSWORD_MAX {
        Err("must be at most 128 characters")
    } else {
        Ok(())
    }
}

fn trim(value: &mut String) {
    let trimmed = value.trim();
    if trimmed.len() != value.len() {
        *value = trimmed.to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_checked() {
        let mut ok = " Ada@Example.com ".to_owned();
        assert_eq!(email(&mut ok), Ok(()));
        assert_eq!(ok, "Ada@Example.com");
        for bad in ["nope", "a@b", "", "a b@example.com"] {
            assert!(email(&mut bad.to_owned()).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            email(&mut long.clone()),
            Err("must be at most 254 characters")
        );
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        let mut ok = "  Ada  ".to_owned();
        assert_eq!(name(&mut ok), Ok(()));
        assert_eq!(ok, "Ada");
        assert_eq!(name(&mut "   ".to_owned()), Err("must not be empty"));
        assert!(name(&mut "x".repeat(101)).is_err());
        assert!(name(&mut "a\u{7}b".to_owned()).is_err());
    }

    #[test]
    fn passwords_have_bounds() {
        assert!(new_password(&"x".repeat(11)).is_err());
        assert!(new_password(&"x".repeat(12)).is_ok());
        assert!(new_password(&"x".repeat(129)).is_err());
        assert!(entered_password("short").is_ok());
        assert!(entered_password(&"x".repeat(129)).is_err());
    }
}
