//! The profile's avatar: an uploaded image (a `files` row of purpose `avatar`) and, once the
//! thumbnail job has run, its thumbnail.

use uuid::Uuid;

use super::{object_key, repo, upload::Stored};
use crate::app::AppState;
use crate::error::ApiError;
use crate::jobs::{self, Job, thumbnail::MakeThumbnail};

/// An avatar that has been replaced and is to be removed.
#[derive(Debug, Clone)]
pub struct Replaced {
    pub file_id: Uuid,
    pub object_key: String,
    pub thumbnail_key: String,
}

/// Records the stored image as `user`'s avatar, pending its thumbnail, in one transaction, and
/// returns the avatar it replaces.
#[tracing::instrument(skip_all, fields(user = %user))]
pub async fn replace(
    state: &AppState,
    user: Uuid,
    file_id: Uuid,
    key: &str,
    stored: &Stored,
) -> Result<Option<Replaced>, ApiError> {
    let mut tx = state.db.write().begin().await?;
    // The user row first: two avatar uploads at once then replace one another in order, each
    // seeing the other's file as the previous one. (Inserting the file first would take a
    // shared lock on the row through the foreign key, and two uploads would deadlock.)
    let previous = sqlx::query!(
        r#"select u.avatar_file_id, f.object_key as "object_key?"
             from users u left join files f on f.id = u.avatar_file_id
            where u.id = $1 and u.deletion_requested_at is null
              for update of u"#,
        user
    )
    .fetch_optional(&mut *tx)
    .await?
    // Gone, or being deleted: the deletion job may already have listed the objects.
    .ok_or(ApiError::Unauthenticated)?;
    repo::insert(&mut *tx, &stored.as_new_file(file_id, user, "avatar", key))
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    sqlx::query!(
        "update users
            set avatar_file_id = $2, avatar_status = 'pending', avatar_thumbnail_key = null,
                updated_at = now()
          where id = $1",
        user,
        file_id
    )
    .execute(&mut *tx)
    .await?;
    // The thumbnail job commits with the avatar it is for.
    let job = Job::MakeThumbnail(MakeThumbnail {
        user_id: user,
        file_id,
    });
    jobs::enqueue(&mut tx, job, Some(user)).await?;
    tx.commit().await?;
    jobs::enqueued("make_thumbnail");
    Ok(match (previous.avatar_file_id, previous.object_key) {
        (Some(file_id), Some(object_key)) => Some(Replaced {
            file_id,
            object_key,
            // Derived, not read: a thumbnail job still running for the old avatar writes it
            // after this point, and `discard` must remove that too.
            thumbnail_key: object_key::thumbnail(user, file_id),
        }),
        _ => None,
    })
}

/// Removes a replaced avatar's objects, then its row. Best effort: a failure is logged and
/// leaves the row, so the objects stay findable.
pub async fn discard(state: &AppState, replaced: &Replaced) {
    for key in [&replaced.object_key, &replaced.thumbnail_key] {
        if let Err(e) = state.storage.delete_object(key).await {
            tracing::warn!(%key, error = %e, "could not delete a replaced avatar");
            return;
        }
    }
    if let Err(e) = repo::delete(state.db.write(), replaced.file_id).await {
        tracing::warn!(file = %replaced.file_id, error = %e, "could not delete a replaced avatar's row");
    }
}

/// Where `user`'s thumbnail is, when their avatar is ready.
pub async fn thumbnail_key(
    db: impl sqlx::PgExecutor<'_>,
    user: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "select avatar_thumbnail_key from users where id = $1 and avatar_status = 'ready'",
        user
    )
    .fetch_optional(db)
    .await?
    .flatten())
}
