//! Input rules for accounts, collected per field so a client can show every problem at once.

use crate::error::{ApiError, FieldErrors};

pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 128;
pub const NAME_MAX: usize = 100;
pub const EMAIL_MAX: usize = 254;

/// Accumulates field errors; `finish` turns any into a 422.
#[derive(Debug, Default)]
pub struct Check(FieldErrors);

impl Check {
    fn fail(&mut self, field: &str, message: &str) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.to_owned());
    }

    /// Returns the address trimmed; its case is kept (uniqueness ignores case).
    pub fn email(&mut self, field: &str, email: &str) -> String {
        let email = email.trim();
        if email.chars().count() > EMAIL_MAX {
            self.fail(field, "must be at most 254 characters");
        } else if !email_address::EmailAddress::is_valid(email) || !email.contains('.') {
            self.fail(field, "is not a valid email address");
        }
        email.to_owned()
    }

    pub fn name(&mut self, field: &str, name: &str) -> String {
        let name = name.trim();
        if name.is_empty() {
            self.fail(field, "must not be empty");
        } else if name.chars().count() > NAME_MAX {
            self.fail(field, "must be at most 100 characters");
        } else if name.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
        name.to_owned()
    }

    /// Length is the policy (NIST 800-63B): long passphrases beat composition rules.
    pub fn password(&mut self, field: &str, password: &str) {
        let n = password.chars().count();
        if n < PASSWORD_MIN {
            self.fail(field, "must be at least 12 characters");
        } else if n > PASSWORD_MAX {
            self.fail(field, "must be at most 128 characters");
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
