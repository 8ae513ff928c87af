//! How the pool makes a connection: with the password as it is now (a secret in AWS Secrets
//! Manager may have rotated since the last connection; the secrets room re-reads it as it
//! ages) and the URL's TLS settings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Error, Socket};

use crate::Unpoisoned;
use crate::secrets::{Secret, SecretStore, SecretValue};

pub(super) struct Connector<T> {
    pub(super) tls: T,
    pub(super) password: Option<Password>,
}

/// `[store] password_secret`.
pub(super) struct Password {
    secret: Arc<Secret>,
    secrets: SecretStore,
    /// The value last used. When the secret cannot be read (AWS unreachable) it is used
    /// again: the database, not a cache's age, says whether it is still right, and a store
    /// that stops connecting because a secret service is down would stop every replica.
    last: Mutex<SecretValue>,
}

impl Password {
    pub(super) fn new(secret: Arc<Secret>) -> Self {
        let secrets = SecretStore::new(&BTreeMap::from([(secret.id.clone(), secret.clone())]));
        Self::with(secret, secrets)
    }

    /// With `secrets` serving the secret's values (built for it).
    pub(super) fn with(secret: Arc<Secret>, secrets: SecretStore) -> Self {
        Self {
            last: Mutex::new(secret.value.clone()),
            secret,
            secrets,
        }
    }

    pub(super) async fn current(&self) -> SecretValue {
        match self.secrets.current(&self.secret).await {
            Ok(value) => {
                *self.last.lock().unpoisoned() = value.clone();
                value
            }
            Err(why) => {
                tracing::warn!(
                    secret = %self.secret.id,
                    "the PostgreSQL store's password: {why}; connecting with the value last read"
                );
                self.last.lock().unpoisoned().clone()
            }
        }
    }
}

impl<T> Connect for Connector<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(&self, config: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let mut config = config.clone();
        Box::pin(async move {
            if let Some(password) = &self.password {
                config.password(password.current().await.expose());
            }
            let (client, connection) = config.connect(self.tls.clone()).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("a PostgreSQL store connection ended: {e}");
                }
            });
            Ok((client, task))
        })
    }
}
