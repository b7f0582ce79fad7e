//! Bodies wrong in several fields at once: one 422 names every bad field (missing, of the
//! wrong type, unknown, or breaking a rule), and nothing is created or changed.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Api, TestUser, files_of, my_id, session_cookie, signed_up, spawn_app, users_with_email,
};

/// Sends `body` and returns the 422's `errors`, checking the problem document around them.
async fn field_errors(api: &Api, method: Method, path: &str, body: &Value) -> Value {
    let response = api.send(api.request(method, path).json(body)).await;
    assert_eq!(
        response.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "{path} {body}"
    );
    if api.cookie.is_none() {
        // Signup and login refused: no session was started.
        assert!(
            session_cookie(&response).is_none(),
            "{path} {body}: a refused request starts no session"
        );
    }
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("a problem document");
    assert_eq!(problem["type"], "https://scaleout.dev/problems/validation");
    problem["errors"].clone()
}

/// Asserts that exactly `fields` are named, and returns the errors for closer looks.
async fn names_exactly(
    api: &Api,
    method: Method,
    path: &str,
    body: Value,
    fields: &[&str],
) -> Value {
    let errors = field_errors(api, method, path, &body).await;
    let named: BTreeSet<&str> = errors
        .as_object()
        .unwrap_or_else(|| panic!("{path} {body}: errors is an object: {errors}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        named,
        fields.iter().copied().collect::<BTreeSet<_>>(),
        "{path} {body}: {errors}"
    );
    errors
}

fn first_message(errors: &Value, field: &str) -> String {
    errors[field][0].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_signup_wrong_in_every_field_names_each_and_creates_nothing() {
    let app = spawn_app().await;
    let api = Api::new(app.url(""));
    let user = TestUser::new();

    // The README's example: the bad email and both missing fields, not only the first.
    let errors = names_exactly(
        &api,
        Method::POST,
        "/auth/signup",
        json!({"email": "nope"}),
        &["email", "name", "password"],
    )
    .await;
    assert_eq!(errors["email"], json!(["is not a valid email address"]));
    assert_eq!(errors["name"], json!(["is required"]));
    assert_eq!(errors["password"], json!(["is required"]));

    // A good email beside a mistyped name, a short password and a field nobody asked for.
    let errors = names_exactly(
        &api,
        Method::POST,
        "/auth/signup",
        json!({"email": user.email, "name": 7, "password": "short", "admin": true}),
        &["name", "password", "admin"],
    )
    .await;
    assert!(
        first_message(&errors, "name").starts_with("invalid type"),
        "{errors}"
    );
    assert_eq!(
        errors["password"],
        json!(["must be at least 12 characters"])
    );
    assert_eq!(errors["admin"], json!(["is not a known field"]));

    names_exactly(
        &api,
        Method::POST,
        "/auth/signup",
        json!({"email": 42, "name": " ", "password": ["x"]}),
        &["email", "name", "password"],
    )
    .await;

    assert_eq!(users_with_email(&app.state, &user.email).await, 0);
    assert_eq!(users_with_email(&app.state, "nope").await, 0);
}

#[tokio::test]
async fn a_login_wrong_in_every_field_names_each_and_logs_nobody_in() {
    let app = spawn_app().await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let anonymous = Api::new(app.url(""));

    names_exactly(
        &anonymous,
        Method::POST,
        "/auth/login",
        json!({}),
        &["email", "password"],
    )
    .await;
    let errors = names_exactly(
        &anonymous,
        Method::POST,
        "/auth/login",
        json!({"email": "nope", "password": 12345, "remember": true}),
        &["email", "password", "remember"],
    )
    .await;
    assert_eq!(errors["email"], json!(["is not a valid email address"]));
    names_exactly(
        &anonymous,
        Method::POST,
        "/auth/login",
        json!({"email": user.email, "password": "x".repeat(129)}),
        &["password"],
    )
    .await;
}

#[tokio::test]
async fn a_profile_change_wrong_in_every_field_names_each_and_changes_nothing() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;

    let errors = names_exactly(
        &api,
        Method::PATCH,
        "/me",
        json!({"name": "", "email": "nope", "avatar": "x"}),
        &["name", "email", "avatar"],
    )
    .await;
    assert_eq!(errors["name"], json!(["must not be empty"]));
    names_exactly(
        &api,
        Method::PATCH,
        "/me",
        json!({"name": 7, "email": ["a@example.com"]}),
        &["name", "email"],
    )
    .await;
    // An unknown field and nothing to change: both are said.
    names_exactly(
        &api,
        Method::PATCH,
        "/me",
        json!({"password": "x"}),
        &["password", "body"],
    )
    .await;

    let me: Value = api.me().await.json().await.expect("json");
    assert_eq!(me["name"], user.name);
    assert_eq!(me["email"], user.email);
}

#[tokio::test]
async fn a_password_change_wrong_in_every_field_names_each_and_changes_nothing() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;

    names_exactly(
        &api,
        Method::PUT,
        "/me/password",
        json!({}),
        &["current_password", "new_password"],
    )
    .await;
    let errors = names_exactly(
        &api,
        Method::PUT,
        "/me/password",
        json!({"current_password": 1, "new_password": "short", "logout_others": true}),
        &["current_password", "new_password", "logout_others"],
    )
    .await;
    assert_eq!(
        errors["new_password"],
        json!(["must be at least 12 characters"])
    );

    // The password is unchanged: this session still works and the old password logs in.
    assert_eq!(api.me().await.status(), StatusCode::OK);
    let mut again = Api::new(app.url(""));
    assert_eq!(again.login(&user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upload_start_wrong_in_every_field_names_each_and_creates_nothing() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;

    let errors = names_exactly(
        &api,
        Method::POST,
        "/files/uploads",
        json!({"name": " ", "content_type": "application/x-msdownload", "size": 0, "acl": "public"}),
        &["name", "content_type", "size", "acl"],
    )
    .await;
    assert!(
        first_message(&errors, "content_type").starts_with("must be one of"),
        "{errors}"
    );
    names_exactly(
        &api,
        Method::POST,
        "/files/uploads",
        json!({"name": 5}),
        &["name", "content_type", "size"],
    )
    .await;
    names_exactly(
        &api,
        Method::POST,
        "/files/uploads",
        json!({"content_type": "text/plain", "size": "ten"}),
        &["size"],
    )
    .await;

    assert_eq!(files_of(&app.state, owner).await, 0);
}

#[tokio::test]
async fn an_upload_with_a_part_besides_the_file_names_it_and_stores_nothing() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let file = || reqwest::multipart::Part::bytes(b"plain text".to_vec()).file_name("a.txt");

    // A part after the file is read once the file is stored: the object must go again.
    for (what, form, field) in [
        (
            "a part after the file",
            reqwest::multipart::Form::new()
                .part("file", file())
                .text("note", "x"),
            "note",
        ),
        (
            "a part before the file",
            reqwest::multipart::Form::new()
                .text("acl", "public")
                .part("file", file()),
            "acl",
        ),
        (
            "two files",
            reqwest::multipart::Form::new()
                .part("file", file())
                .part("file", file()),
            "file",
        ),
    ] {
        let response = api
            .send(api.request(Method::POST, "/files").multipart(form))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}"
        );
        let problem: Value = response.json().await.expect("a problem document");
        assert!(problem["errors"][field].is_array(), "{what}: {problem}");
    }

    assert_eq!(files_of(&app.state, owner).await, 0);
    let prefix = scaleout::files::object_key::owner_prefix(owner);
    let objects = crate::helpers::storage()
        .list_keys(&prefix)
        .await
        .expect("lists the bucket");
    assert_eq!(objects, Vec::<String>::new(), "no object is left");
}
