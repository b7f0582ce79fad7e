//! The avatar thumbnail: the uploaded image, decoded and scaled to fit 256×256, stored as PNG
//! beside it; then the profile's avatar turns `ready` (or `failed`, for an image that cannot be
//! decoded).
//!
//! Idempotent: the thumbnail's key is derived from the avatar's file id, so a second run
//! overwrites the same object with the same bytes, and the final update only applies while this
//! file is still the user's avatar (a newer upload has its own job).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::db::Writer;
use crate::files::object_key;
use crate::{accounts, files};

/// The longest side of a thumbnail, in pixels.
pub const SIZE: u32 = 256;

/// Bounds on decoding, whatever the file's size: a tiny PNG can declare 16384×16384 pixels
/// of one colour and decode to a gigabyte (a decompression bomb).
const MAX_SIDE: u32 = 8192;
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

static DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakeThumbnail {
    pub user_id: Uuid,
    pub file_id: Uuid,
}

impl MakeThumbnail {
    #[tracing::instrument(skip_all, fields(user = %self.user_id, file = %self.file_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        // Read on the primary: the job must not act on a replica's older view of the avatar.
        let source =
            if accounts::repo::has_avatar(db.read_primary(), self.user_id, self.file_id).await? {
                files::repo::object_key(db.read_primary(), self.file_id).await?
            } else {
                None
            };
        let Some(source) = source else {
            tracing::info!("no longer the user's avatar; nothing to do");
            return Ok(());
        };
        let original = ctx.state.storage.get_object(&source).await?;
        // One decode at a time per worker: each may hold up to MAX_DECODE_BYTES.
        let rendered = {
            let _permit = DECODES.acquire().await?;
            tokio::task::spawn_blocking(move || render(&original)).await?
        };
        let png = match rendered {
            Ok(png) => png,
            // Not an image we can decode (or past the limits): no retry will change that.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the avatar cannot be decoded");
                let mut write = db.begin(Writer::User(self.user_id)).await?;
                accounts::repo::set_avatar_failed(&mut write, self.user_id, self.file_id).await?;
                write.commit().await?;
                return Ok(());
            }
        };
        let key = object_key::thumbnail(self.user_id, self.file_id);
        ctx.state.storage.put_object(&key, png, "image/png").await?;
        // Written for the user: their next read shows the avatar ready, through any instance.
        let mut write = db.begin(Writer::User(self.user_id)).await?;
        let updated =
            accounts::repo::set_avatar_ready(&mut write, self.user_id, self.file_id, &key).await?;
        write.commit().await?;
        if !updated {
            // Replaced or being deleted while we worked: whoever removes the avatar's objects
            // may have done so before our thumbnail existed, so it is ours to remove.
            ctx.state.storage.delete_object(&key).await?;
        }
        Ok(())
    }
}

/// Decodes `image` and scales it to fit [`SIZE`]×[`SIZE`], keeping its proportions. The
/// decoder is bounded: an image wider or taller than [`MAX_SIDE`], or needing more than
/// [`MAX_DECODE_BYTES`], is refused from its header, before anything is allocated.
pub fn render(image: &[u8]) -> anyhow::Result<Bytes> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(image)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
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

    /// CRC-32 (IEEE), as PNG chunks use it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = u32::MAX;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_thumbnail_fits_the_box_and_keeps_proportions() {
        let thumb = render(&png(1024, 512)).expect("renders");
        let decoded = image::load_from_memory(&thumb).expect("a PNG");
        assert_eq!((decoded.width(), decoded.height()), (256, 128));
    }

    #[test]
    fn bytes_that_are_not_an_image_are_an_error() {
        assert!(render(b"\x89PNG\r\n\x1a\nnot really").is_err());
    }

    #[test]
    fn an_image_claiming_huge_dimensions_is_refused_before_decoding() {
        // A valid PNG header declaring 20000×20000 pixels; the pixel data never comes.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        // The IHDR chunk's CRC covers its type and data (bytes 12..29).
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let error = render(&bomb).expect_err("refused");
        assert!(
            format!("{error:#}").to_lowercase().contains("limit"),
            "{error:#}"
        );
    }
}
