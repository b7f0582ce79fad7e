//! Changing the profile's avatar: the uploaded image (a `files` row of purpose `avatar`)
//! recorded as the user's avatar with its thumbnail job, in one write, and the replaced one
//! discarded. The workflow of `PUT /me/avatar`, beside its handler.

use uuid::Uuid;

use crate::accounts;
use crate::app::AppState;
use crate::db::Writer;
use crate::error::ApiError;
use crate::files::{object_key, repo, upload::Stored};
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
    let mut write = state.db.begin(Writer::User(user)).await?;
    // The user row first: two avatar uploads at once then replace one another in order, each
    // seeing the other's file as the previous one. (Inserting the file first would take a
    // shared lock on the row through the foreign key, and two uploads would deadlock.)
    let previous = accounts::repo::lock_for_avatar(&mut write, user)
        .await?
        // Gone, or being deleted: the deletion job may already have listed the objects.
        .ok_or(ApiError::Unauthenticated)?;
    let previous_key = match previous {
        Some(file) => repo::object_key(&mut *write, file).await?,
        None => None,
    };
    repo::insert(
        &mut write,
        &stored.as_new_file(file_id, user, "avatar", key),
    )
    .await?
    .ok_or(ApiError::Unauthenticated)?;
    accounts::repo::set_avatar_pending(&mut write, user, file_id).await?;
    // The thumbnail job commits with the avatar it is for.
    let job = Job::MakeThumbnail(MakeThumbnail {
        user_id: user,
        file_id,
    });
    jobs::enqueue(&mut write, job, Some(user)).await?;
    write.commit().await?;
    Ok(match (previous, previous_key) {
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
    let deleted = async {
        let mut write = state.db.begin(Writer::System).await?;
        repo::delete(&mut write, replaced.file_id).await?;
        write.commit().await
    };
    if let Err(e) = deleted.await {
        tracing::warn!(file = %replaced.file_id, error = %e, "could not delete a replaced avatar's row");
    }
}
