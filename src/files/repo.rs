//! All SQL on `files`. Queries made for a user name the owner: a file is visible to its owner
//! only, and the database enforces it in the `where` clause rather than the handler after the
//! fact. The jobs that sweep files (the purge, account deletion) call the functions at the end.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Write;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub object_key: String,
    pub name: Option<String>,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: Option<String>,
    pub status: String,
    pub upload_expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A file about to be recorded.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub purpose: &'a str,
    pub object_key: &'a str,
    pub name: Option<&'a str>,
    pub size_bytes: i64,
    pub content_type: &'a str,
    pub sha256: Option<&'a str>,
    pub status: &'a str,
    pub upload_expires_at: Option<OffsetDateTime>,
}

/// Records a file, unless its owner is gone or being deleted (`None`): the deletion job may
/// already have listed the owner's objects, so the caller must discard the object.
#[tracing::instrument(skip_all, fields(file = %file.id))]
pub async fn insert(write: &mut Write, file: &NewFile<'_>) -> Result<Option<FileRow>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        "insert into files (id, owner_id, purpose, object_key, name, size_bytes, content_type,
                            sha256, status, upload_expires_at)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
          where exists (select 1 from users where id = $2 and deletion_requested_at is null)
         returning id, owner_id, object_key, name, size_bytes, content_type, sha256, status,
                   upload_expires_at, created_at, updated_at",
        file.id,
        file.owner_id,
        file.purpose,
        file.object_key,
        file.name,
        file.size_bytes,
        file.content_type,
        file.sha256,
        file.status,
        file.upload_expires_at,
    )
    .fetch_optional(&mut **write)
    .await
}

/// One of the owner's files managed through `/files` (avatars are not).
#[tracing::instrument(skip_all, fields(file = %id))]
pub async fn find_owned(
    db: impl PgExecutor<'_>,
    owner_id: Uuid,
    id: Uuid,
) -> Result<Option<FileRow>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        "select id, owner_id, object_key, name, size_bytes, content_type, sha256, status,
                upload_expires_at, created_at, updated_at
           from files
          where id = $1 and owner_id = $2 and purpose = 'upload'",
        id,
        owner_id,
    )
    .fetch_optional(db)
    .await
}

/// A page of the owner's files, newest first, strictly older than `before` when given.
/// Keyset pagination: the cost of a page does not grow with how deep it is.
#[tracing::instrument(skip_all)]
pub async fn list_owned(
    db: impl PgExecutor<'_>,
    owner_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<FileRow>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        "select id, owner_id, object_key, name, size_bytes, content_type, sha256, status,
                upload_expires_at, created_at, updated_at
           from files
          where owner_id = $1 and purpose = 'upload' and ($2::uuid is null or id < $2)
          order by id desc
          limit $3",
        owner_id,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Marks a pending upload available, its object now at `object_key`; `None` if it is not
/// pending (any more): completed by another request, deleted or purged meanwhile.
#[tracing::instrument(skip_all, fields(file = %id))]
pub async fn mark_available(
    write: &mut Write,
    id: Uuid,
    object_key: &str,
) -> Result<Option<FileRow>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        "update files
            set status = 'available', object_key = $2, upload_expires_at = null,
                updated_at = now()
          where id = $1 and status = 'pending'
      returning id, owner_id, object_key, name, size_bytes, content_type, sha256, status,
                upload_expires_at, created_at, updated_at",
        id,
        object_key,
    )
    .fetch_optional(&mut **write)
    .await
}

#[tracing::instrument(skip_all, fields(file = %id))]
pub async fn delete(write: &mut Write, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("delete from files where id = $1", id)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The object key of file `id`, whoever owns it: for jobs that already know the owner.
#[tracing::instrument(skip_all, fields(file = %id))]
pub async fn object_key(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("select object_key from files where id = $1", id)
        .fetch_optional(db)
        .await
}

/// A pending upload whose URL expired more than `grace` ago, deleted by the purge.
#[derive(Debug, Clone, Copy)]
pub struct Abandoned {
    pub id: Uuid,
    pub owner_id: Uuid,
}

/// Deletes up to `limit` abandoned uploads, oldest first, and returns them: their staging
/// objects are the caller's to delete, after the commit (no transaction waits on storage).
/// Rows another transaction holds are skipped; a completion that committed first has made
/// its file available, which this never deletes.
#[tracing::instrument(skip_all)]
pub async fn delete_abandoned(
    write: &mut Write,
    grace: std::time::Duration,
    limit: i64,
) -> Result<Vec<Abandoned>, sqlx::Error> {
    let grace = sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(grace.as_micros()).unwrap_or(i64::MAX),
    };
    sqlx::query_as!(
        Abandoned,
        "delete from files
          where id in (select id from files
                        where status = 'pending' and upload_expires_at < now() - $1::interval
                        order by upload_expires_at
                        limit $2
                          for update skip locked)
            and status = 'pending'
      returning id, owner_id",
        grace,
        limit
    )
    .fetch_all(&mut **write)
    .await
}

/// Deletes the rows of `ids` (an organization's files, whose objects are already gone).
#[tracing::instrument(skip_all)]
pub async fn delete_many(write: &mut Write, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("delete from files where id = any($1)", ids)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` of `owner`'s files; returns how many went (0: none left).
#[tracing::instrument(skip_all)]
pub async fn delete_batch_of_owner(
    write: &mut Write,
    owner: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "delete from files where id in (select id from files where owner_id = $1 limit $2)",
        owner,
        limit
    )
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` of organization `org`'s files, as (id, object key): for its deletion job.
pub async fn object_keys_of_org(
    db: impl PgExecutor<'_>,
    org: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("select id, object_key from files where org_id = $1 limit $2")
        .bind(org)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// A file managed through `/files`, with the organization it belongs to, if any.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadRow {
    #[sqlx(flatten)]
    pub file: FileRow,
    pub org_id: Option<Uuid>,
}

/// File `id` managed through `/files`, whoever owns it: the caller decides who may see it
/// (its owner, or a member of its organization).
#[tracing::instrument(skip_all, fields(file = %id))]
pub async fn find_upload(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, owner_id, object_key, name, size_bytes, content_type, sha256, status,
                upload_expires_at, created_at, updated_at, org_id
           from files
          where id = $1 and purpose = 'upload'",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Puts file `id` in organization `org` (its members read it, its admins delete it).
#[tracing::instrument(skip_all, fields(file = %id))]
pub async fn set_org(write: &mut Write, id: Uuid, org: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update files set org_id = $2 where id = $1")
        .bind(id)
        .bind(org)
        .execute(&mut **write)
        .await?;
    Ok(())
}

/// A page of organization `org`'s files, newest first, older than `before`.
#[tracing::instrument(skip_all)]
pub async fn list_of_org(
    db: impl PgExecutor<'_>,
    org: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<FileRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, owner_id, object_key, name, size_bytes, content_type, sha256, status,
                upload_expires_at, created_at, updated_at
           from files
          where org_id = $1 and purpose = 'upload' and id < coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
          order by id desc
          limit $3",
    )
    .bind(org)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}
