//! Object storage through the S3 API: any S3-compatible server (Garage locally, AWS S3 or
//! another provider in the cloud). Uploads live here, never on an instance's disk.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, timeout::TimeoutConfig};

use crate::config::StorageConfig;

/// The S3 client and the bucket every object of this deployment lives in.
#[derive(Debug, Clone)]
pub struct Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Storage {
    pub fn new(config: &StorageConfig) -> Self {
        let credentials = Credentials::new(
            &config.access_key_id,
            config.secret_access_key.expose(),
            None,
            None,
            "scaleout-environment",
        );
        // Every call is bounded: a slow or absent object store must turn into a fast error,
        // not a request that hangs until the client gives up.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.timeout)
            .operation_attempt_timeout(config.timeout)
            .operation_timeout(config.timeout * 2)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.force_path_style)
            .timeout_config(timeouts);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `HeadBucket`: the bucket exists and our credentials may use it. The readiness check.
    pub async fn check(&self) -> Result<(), aws_sdk_s3::Error> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(aws_sdk_s3::Error::from)?;
        Ok(())
    }
}
