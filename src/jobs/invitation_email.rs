//! The invitation email: a single-use token, made here, just before sending, so it is never
//! at rest anywhere but the recipient's mailbox (the table keeps its hash; the queue never
//! sees it).
//!
//! Idempotent: `emailed_at` records the handoff, and a run that finds it (or finds the
//! invitation revoked, accepted or expired) sends nothing. A worker that dies between the
//! server's acceptance and that record sends a second email on the retry, with a new token
//! that replaces the first: the newest email is the one that works.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::db::Writer;
use crate::email::Email;
use crate::workspace::invitations;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvitationEmail {
    pub invitation_id: Uuid,
}

impl InvitationEmail {
    #[tracing::instrument(skip_all, fields(invitation = %self.invitation_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        let token = invitations::new_token();
        let mut write = db.begin(Writer::System).await?;
        let Some(to) = invitations::issue_token(&mut write, self.invitation_id, &token).await?
        else {
            tracing::info!("nothing to send: emailed, revoked, accepted, expired or gone");
            return Ok(());
        };
        write.commit().await?;
        ctx.state
            .mailer
            .send(&Email {
                to: &to.email,
                subject: &format!("You are invited to {} on scaleout", to.org_name),
                body: format!(
                    "Hello,\n\nyou are invited to join {} as {}.\n\n\
                     To accept, sign in and send this token to\n\
                     POST /api/v1/invitations/accept:\n\n\
                     {token}\n\n\
                     It can be used once, until {}.\n\n-- scaleout\n",
                    to.org_name, to.role, to.expires_at
                ),
                message_id: format!("<{}@scaleout>", ctx.job_id),
            })
            .await?;
        let mut write = db.begin(Writer::System).await?;
        invitations::mark_emailed(&mut write, self.invitation_id).await?;
        write.commit().await?;
        Ok(())
    }
}
