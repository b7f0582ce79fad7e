//! The API as a client sees it: HTTP clients with addresses of their own, session cookies, and
//! [`Api`], which hides the HTTP plumbing behind one method per operation.

use std::time::Duration;

use super::fixtures::TestUser;
use super::topology::eventually;

/// An HTTP client that connects from an address of its own in 127.0.0.0/8. Per-address rate
/// limits count by the client's address (nginx's `X-Real-IP`, or the peer address), so each
/// client is a separate "user agent" and tests never share a counter with each other or with
/// the API contract run (which comes from 127.0.0.1).
pub fn client() -> reqwest::Client {
    client_from(loopback_address())
}

/// A client that connects from `address` (a loopback address: nothing else is routable here).
pub fn client_from(address: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address(address)
        .build()
        .expect("a reqwest client builds")
}

/// A random address in 127.0.0.0/8 other than 127.0.0.1 (every one of them reaches the
/// loopback interface on Linux).
pub fn loopback_address() -> std::net::IpAddr {
    let b = *uuid::Uuid::new_v4().as_bytes();
    std::net::IpAddr::from([127, b[0] | 1, b[1], b[2].max(2)])
}

/// A client that does not follow redirects, to see the 302 itself.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client builds")
}

/// The whole `Set-Cookie` header of the session cookie, attributes included, if one is set.
pub fn session_set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("scaleout_session="))
        .map(str::to_owned)
}

/// The `name=value` of the session cookie a response sets, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    session_set_cookie(response)
        .as_deref()
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .filter(|c| c != "scaleout_session=")
}

/// A thin API client for one base URL (an instance, nginx, or an in-process app), carrying a
/// session cookie the way a browser would.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub cookie: Option<String>,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: client(),
            cookie: None,
        }
    }

    /// The same session, through another base URL (another instance).
    pub fn via(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(cookie) = &self.cookie {
            builder = builder.header("cookie", cookie);
        }
        builder
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> reqwest::Response {
        builder.send().await.expect("the API answers")
    }

    /// Sends and keeps any session cookie the response sets.
    pub async fn send_keeping_cookie(
        &mut self,
        builder: reqwest::RequestBuilder,
    ) -> reqwest::Response {
        let response = self.send(builder).await;
        if let Some(cookie) = session_cookie(&response) {
            self.cookie = Some(cookie);
        }
        response
    }

    pub async fn signup(&mut self, user: &TestUser) -> reqwest::Response {
        let request = self
            .request(reqwest::Method::POST, "/auth/signup")
            .json(&user.signup_body());
        self.send_keeping_cookie(request).await
    }

    pub async fn login(&mut self, user: &TestUser) -> reqwest::Response {
        let request = self
            .request(reqwest::Method::POST, "/auth/login")
            .json(&user.login_body());
        self.send_keeping_cookie(request).await
    }

    pub async fn me(&self) -> reqwest::Response {
        self.send(self.request(reqwest::Method::GET, "/me")).await
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.send(self.request(reqwest::Method::POST, path)).await
    }
}

impl Api {
    /// Renames the caller with `PATCH /me`: the write most tests use.
    pub async fn rename(&self, name: &str) {
        let response = self
            .send(
                self.request(reqwest::Method::PATCH, "/me")
                    .json(&serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::OK, "rename");
    }

    /// Deletes the account with `DELETE /me` and returns the deletion job's id.
    pub async fn delete_account(&self, user: &TestUser) -> String {
        let accepted = self
            .send(
                self.request(reqwest::Method::DELETE, "/me")
                    .json(&serde_json::json!({"password": user.password})),
            )
            .await;
        assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED, "deletion");
        let body: serde_json::Value = accepted.json().await.expect("a JSON body");
        body["job_id"].as_str().expect("a job id").to_owned()
    }

    /// Polls `GET /jobs/{id}` until `wanted` holds for the view, and returns that view.
    pub async fn poll_job(
        &self,
        id: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let wanted = &wanted;
        eventually(
            &format!("job {id}"),
            Duration::from_secs(60),
            || async move {
                let response = self
                    .send(self.request(reqwest::Method::GET, &format!("/jobs/{id}")))
                    .await;
                assert_eq!(response.status(), reqwest::StatusCode::OK);
                let view: serde_json::Value = response.json().await.expect("a JSON body");
                wanted(&view).then_some(view)
            },
        )
        .await
    }

    /// Starts a direct upload of `size` bytes of text; returns the file id and the presigned
    /// upload target.
    pub async fn start_upload(&self, size: usize) -> (uuid::Uuid, serde_json::Value) {
        let created = self
            .send(
                self.request(reqwest::Method::POST, "/files/uploads")
                    .json(&serde_json::json!({"content_type": "text/plain", "size": size})),
            )
            .await;
        assert_eq!(
            created.status(),
            reqwest::StatusCode::CREATED,
            "upload start"
        );
        let created: serde_json::Value = created.json().await.expect("a JSON body");
        let id = created["file"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        (id, created["upload"].clone())
    }
}

/// PUTs `body` to a presigned upload target with the headers it names (less the length, which
/// the transport sets from the body itself: tests send other lengths on purpose).
pub async fn presigned_put(
    target: &serde_json::Value,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut put = client().put(target["url"].as_str().expect("a URL"));
    for (name, value) in target["headers"].as_object().expect("headers") {
        if name != "content-length" {
            put = put.header(name, value.as_str().expect("a string"));
        }
    }
    put.body(body).send().await.expect("storage answers")
}

/// Signs `user` up through `base` and returns a logged-in client.
pub async fn signed_up(base: &str, user: &TestUser) -> Api {
    let mut api = Api::new(base);
    let response = api.signup(user).await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED, "signup");
    assert!(api.cookie.is_some(), "signup sets the session cookie");
    api
}

impl Api {
    /// Sends `bytes` as the multipart part `file` to `path` with `method`.
    pub async fn upload_to(
        &self,
        method: reqwest::Method,
        path: &str,
        bytes: Vec<u8>,
        file_name: &str,
        content_type: &str,
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file_name.to_owned())
            .mime_str(content_type)
            .expect("a valid content type");
        let form = reqwest::multipart::Form::new().part("file", part);
        self.send(
            self.request(method, path)
                .multipart(form)
                .timeout(Duration::from_secs(120)),
        )
        .await
    }

    /// Uploads a file through `POST /files`.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        file_name: &str,
        content_type: &str,
    ) -> reqwest::Response {
        self.upload_to(
            reqwest::Method::POST,
            "/files",
            bytes,
            file_name,
            content_type,
        )
        .await
    }

    /// The content of file `id`: follows the 302 to storage with a plain client.
    pub async fn download(&self, id: &str) -> Vec<u8> {
        let mut request =
            no_redirect_client().get(format!("{}/api/v1/files/{id}/content", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let redirect = request.send().await.expect("the API answers");
        assert_eq!(
            redirect.status(),
            reqwest::StatusCode::FOUND,
            "content redirects"
        );
        let location = redirect
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a Location header")
            .to_owned();
        let content = client()
            .get(&location)
            .send()
            .await
            .expect("storage answers");
        assert_eq!(content.status(), reqwest::StatusCode::OK, "presigned GET");
        content.bytes().await.expect("the body").to_vec()
    }
}

/// The `id` of the user a `GET /me` (or signup) body describes.
pub async fn my_id(api: &Api) -> uuid::Uuid {
    let me: serde_json::Value = api.me().await.json().await.expect("JSON");
    me["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id")
}
