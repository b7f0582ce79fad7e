//! Outgoing email over SMTP (lettre). Only the worker sends mail: a request never waits on an
//! SMTP server, it enqueues a job.

use std::time::Instant;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tracing::Instrument;

use crate::config::SmtpConfig;

/// A pooled SMTP transport and the sender address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

/// One email to one recipient.
#[derive(Debug, Clone)]
pub struct Email<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub body: String,
    /// A stable `Message-ID`: if a retry sends the same email again, mail systems can tell.
    pub message_id: String,
}

impl Mailer {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let builder = if config.tls {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)?
        } else {
            // Plain SMTP: for a relay on loopback or a private network (the sink in the local
            // topology), never across the internet.
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
        };
        Ok(Self {
            transport: builder
                .port(config.port)
                .timeout(Some(config.timeout))
                .build(),
            from: config.from.parse()?,
        })
    }

    /// Hands `email` to the SMTP server; an error means it was not accepted.
    pub async fn send(&self, email: &Email<'_>) -> anyhow::Result<()> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(email.to.parse()?)
            .subject(email.subject)
            .message_id(Some(email.message_id.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())?;
        let span = tracing::info_span!("smtp", otel.kind = "client");
        let start = Instant::now();
        let result = self.transport.send(message).instrument(span).await;
        metrics::histogram!("email_send_duration_seconds").record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("email_send_errors_total").increment(1);
        }
        result?;
        Ok(())
    }
}
