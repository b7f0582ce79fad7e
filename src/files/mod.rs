//! Files: uploads in object storage, described by the `files` table. Instances hold no file
//! bytes beyond one multipart part in flight, so any instance can take an upload and any
//! other can hand it out.

pub mod repo;
pub mod sniff;
pub mod upload;

/// Object keys. Every key starts with its owner's prefix, so an account's objects can be found
/// (and deleted) by listing one prefix; none is built from anything a client chose.
pub mod object_key {
    use uuid::Uuid;

    /// Everything `owner` has in storage lives under this prefix.
    pub fn owner_prefix(owner: Uuid) -> String {
        format!("users/{owner}/")
    }

    pub fn file(owner: Uuid, file: Uuid) -> String {
        format!("users/{owner}/files/{file}")
    }

    /// A direct upload's object, copied from the staging area by one completion: each
    /// completion has its own, so one that loses to another never overwrites its object.
    pub fn completed(owner: Uuid, file: Uuid, completion: Uuid) -> String {
        format!("users/{owner}/files/{file}-{completion}")
    }

    pub fn avatar(owner: Uuid, file: Uuid) -> String {
        format!("users/{owner}/avatars/{file}")
    }

    pub fn thumbnail(owner: Uuid, file: Uuid) -> String {
        format!("users/{owner}/avatars/{file}.thumb.png")
    }

    /// Where a direct upload's presigned PUT writes. `complete` copies the checked bytes from
    /// here to the file's key, so the URL (reusable until it expires) can never change a file
    /// once it is available. One prefix for all owners lets the purge sweep leftovers.
    pub fn staging(owner: Uuid, file: Uuid) -> String {
        format!("{STAGING_PREFIX}{owner}/{file}")
    }

    pub const STAGING_PREFIX: &str = "uploads/";

    /// The staging area of one owner.
    pub fn owner_staging_prefix(owner: Uuid) -> String {
        format!("{STAGING_PREFIX}{owner}/")
    }
}
