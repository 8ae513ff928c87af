//! Connecting: the password from `[store] password_secret`, against a cluster that asks for
//! one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::PgStore;
use super::connect::Password;
use crate::config::StoreUrl;
use crate::secrets::{AwsSecret, Secret, SecretFetcher, SecretSource, SecretStore, SecretValue};
use crate::store::test_cluster::{self, Options};

/// The tests' own administration through the socket; every TCP connection with a password.
const PASSWORD_HBA: &str = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";

fn env_secret(id: &str, value: &str) -> Arc<Secret> {
    Arc::new(Secret {
        id: id.into(),
        source: SecretSource::Env {
            name: "WARDEN_TEST_DB_PASSWORD".into(),
        },
        path: "WARDEN_TEST_DB_PASSWORD".into(),
        value: SecretValue::new(value),
        loaded_at: Instant::now(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_the_named_secrets_value_and_a_wrong_one_is_refused_unprinted() {
    let options = Options {
        hba: Some(PASSWORD_HBA.into()),
        ..Options::default()
    };
    let Some(server) = tokio::task::spawn_blocking(|| test_cluster::dedicated_with(options))
        .await
        .unwrap()
    else {
        return;
    };
    server
        .admin("warden")
        .await
        .batch_execute(
            "CREATE ROLE app LOGIN PASSWORD 'right-horse-battery';
             ALTER DATABASE warden OWNER TO app",
        )
        .await
        .unwrap();
    let url = StoreUrl::parse(&format!("postgres://app@127.0.0.1:{}/warden", server.port)).unwrap();

    let right = url
        .clone()
        .with_password_secret(env_secret("db", "right-horse-battery"));
    let store = PgStore::open(&right).await.expect("the right password");
    assert!(store.users().await.unwrap().is_empty());
    assert!(!format!("{right:?}").contains("right-horse"), "{right:?}");

    let wrong = url
        .clone()
        .with_password_secret(env_secret("db", "wrong-staple"));
    let error = PgStore::open(&wrong).await.err().expect("a wrong password");
    let text = format!("{error} {error:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("wrong-staple"), "{text}");

    // `warden users`, from a config naming a file secret.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\npassword_secret = \"db\"\n\n\
             [secrets.db]\nsource = \"file\"\npath = \"db-password\"\n"
        ),
    )
    .unwrap();
    let users = |password: &str| {
        std::fs::write(dir.path().join("db-password"), format!("{password}\n")).unwrap();
        let mut out = Vec::new();
        crate::cli::users::run(&config, crate::cli::users::UsersCommand::List, &mut out)
    };
    users("right-horse-battery").expect("warden users with the secret's password");
    let error = users("wrong-staple").unwrap_err();
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains("wrong-staple"), "{error}");
}

/// What AWS Secrets Manager answers, set by the test.
struct Answer(Mutex<Result<String, String>>);

#[async_trait::async_trait]
impl SecretFetcher for Answer {
    async fn fetch(&self, _: &AwsSecret) -> Result<String, String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_rotated_password_is_used_for_new_connections_and_the_last_one_when_aws_is_down() {
    let secret = Arc::new(Secret {
        id: "db".into(),
        source: SecretSource::AwsSecretsManager(AwsSecret {
            secret_id: "prod/db".into(),
            json_key: None,
            region: None,
            endpoint: None,
            // Read again at every connection.
            cache_ttl: Duration::ZERO,
        }),
        path: "prod/db".into(),
        value: SecretValue::new("first"),
        loaded_at: Instant::now(),
    });
    let aws = Arc::new(Answer(Mutex::new(Ok("second".into()))));
    let now = Arc::new(Mutex::new(Instant::now()));
    let clock = now.clone();
    let secrets = SecretStore::with(
        &BTreeMap::from([("db".to_string(), secret.clone())]),
        aws.clone(),
        Arc::new(move || *clock.lock().unwrap()),
    );
    let password = Password::with(secret, secrets);
    assert_eq!(password.current().await.expose(), "second");
    *aws.0.lock().unwrap() = Err("AWS Secrets Manager is unreachable".into());
    assert_eq!(password.current().await.expose(), "second");
    // AWS back: its answer is used once a failed read is a second old.
    *aws.0.lock().unwrap() = Ok("third".into());
    *now.lock().unwrap() += Duration::from_secs(1);
    assert_eq!(password.current().await.expose(), "third");
}
