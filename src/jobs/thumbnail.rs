//! The avatar thumbnail: the uploaded image, decoded and scaled to fit 256×256, stored as PNG
//! beside it; then the profile's avatar turns `ready`.
//!
//! Idempotent: the thumbnail's key is derived from the avatar's file id, so a second run
//! overwrites the same object with the same bytes, and the final update only applies while this
//! file is still the user's avatar (a newer upload has its own job).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::files::object_key;

/// The longest side of a thumbnail, in pixels.
pub const SIZE: u32 = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakeThumbnail {
    pub user_id: Uuid,
    pub file_id: Uuid,
}

impl MakeThumbnail {
    #[tracing::instrument(skip_all, fields(user = %self.user_id, file = %self.file_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = ctx.state.db.write();
        let source = sqlx::query_scalar!(
            "select f.object_key from users u join files f on f.id = u.avatar_file_id
              where u.id = $1 and f.id = $2",
            self.user_id,
            self.file_id
        )
        .fetch_optional(db)
        .await?;
        let Some(source) = source else {
            tracing::info!("no longer the user's avatar; nothing to do");
            return Ok(());
        };
        let original = ctx.state.storage.get_object(&source).await?;
        let max_pixels = ctx.state.config.files.avatar_max_bytes.saturating_mul(64);
        let png = tokio::task::spawn_blocking(move || render(&original, max_pixels)).await??;
        let key = object_key::thumbnail(self.user_id, self.file_id);
        ctx.state.storage.put_object(&key, png, "image/png").await?;
        sqlx::query!(
            "update users set avatar_status = 'ready', avatar_thumbnail_key = $3, updated_at = now()
              where id = $1 and avatar_file_id = $2",
            self.user_id,
            self.file_id,
            key
        )
        .execute(db)
        .await?;
        Ok(())
    }
}

/// Decodes `image` and scales it to fit [`SIZE`]×[`SIZE`], keeping its proportions. The
/// decoder is bounded: a small file that claims enormous dimensions (a decompression bomb) is
/// refused rather than allowed to allocate gigabytes.
pub fn render(image: &[u8], max_pixels: u64) -> anyhow::Result<Bytes> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(image)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(4).max(64 * 1024 * 1024));
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    reader.limits(limits);
    let decoded = reader.decode()?;
    let thumbnail = decoded.thumbnail(SIZE, SIZE);
    let mut png = std::io::Cursor::new(Vec::new());
    thumbnail.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(Bytes::from(png.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("encodes");
        out.into_inner()
    }

    #[test]
    fn a_thumbnail_fits_the_box_and_keeps_proportions() {
        let thumb = render(&png(1024, 512), 1 << 24).expect("renders");
        let decoded = image::load_from_memory(&thumb).expect("a PNG");
        assert_eq!((decoded.width(), decoded.height()), (256, 128));
    }

    #[test]
    fn bytes_that_are_not_an_image_are_an_error() {
        assert!(render(b"\x89PNG\r\n\x1a\nnot really", 1 << 24).is_err());
    }
}
