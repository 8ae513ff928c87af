//! The PostgreSQL schema, numbered as SQLite's ([`crate::store`]'s `MIGRATIONS`): version N
//! means the same tables and meaning on both. Applied at start, each in its own transaction,
//! under a lock, so replicas starting together apply each once.

use super::Fallible;

/// `warden_schema.version` counts those applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: users and identities. Emails are compared without case (SQLite's NOCASE).
    r#"CREATE FUNCTION warden_utc_now() RETURNS text LANGUAGE sql STABLE
        AS $$ SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;
    CREATE TABLE users (
        email      TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT warden_utc_now()
    );
    CREATE UNIQUE INDEX users_by_email ON users (lower(email));
    CREATE TABLE identities (
        email      TEXT NOT NULL,
        service    TEXT NOT NULL,
        service_id TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT warden_utc_now()
    );
    CREATE UNIQUE INDEX identities_by_key ON identities (lower(email), service, service_id);"#,
    // 2: `warden serve`: access requests, their history, and an append-only audit log.
    // Times are Unix milliseconds.
    r#"CREATE TABLE requests (
        id               TEXT PRIMARY KEY,
        flow             TEXT NOT NULL,
        requester        TEXT NOT NULL,
        fields           TEXT NOT NULL,
        state            TEXT NOT NULL,
        decision         TEXT NOT NULL,
        reason           TEXT,
        created_by       TEXT NOT NULL,
        idempotency_key  TEXT,
        duration_seconds BIGINT,
        expires_at       BIGINT,
        created_at       BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX requests_by_idempotency_key
        ON requests (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX requests_by_state ON requests (state, expires_at);
    CREATE TABLE request_history (
        request_id TEXT NOT NULL REFERENCES requests(id),
        seq        BIGINT NOT NULL,
        entry      TEXT NOT NULL,
        PRIMARY KEY (request_id, seq)
    );
    CREATE TABLE audit_log (
        seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at         BIGINT NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        request_id TEXT,
        detail     TEXT NOT NULL
    );
    CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql
        AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
    CREATE TRIGGER audit_log_is_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();"#,
    // 3: SQLite keeps history rows in request order (WITHOUT ROWID); PostgreSQL's primary
    // key index already serves a request's history in order.
    "SELECT 1",
    // 4: a count of identity changes, from any connection or replica: a version an
    // in-memory identity cache can check.
    r#"CREATE TABLE identity_changes (n BIGINT NOT NULL);
    INSERT INTO identity_changes (n) VALUES (0);
    CREATE FUNCTION identity_changed() RETURNS trigger LANGUAGE plpgsql
        AS $$ BEGIN UPDATE identity_changes SET n = n + 1; RETURN NULL; END $$;
    CREATE TRIGGER identity_changed AFTER INSERT OR UPDATE OR DELETE ON identities
        FOR EACH STATEMENT EXECUTE FUNCTION identity_changed();"#,
    // 5: the requester as submitted (a JSON user).
    "ALTER TABLE requests ADD COLUMN requester_profile TEXT;",
    // 6: notifications waiting to be delivered (SQLite's `store::outbox`).
    r#"CREATE TABLE outbox (
        seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id TEXT NOT NULL UNIQUE,
        request_id  TEXT NOT NULL,
        channel     TEXT NOT NULL,
        event       TEXT NOT NULL,
        body        TEXT NOT NULL,
        attempts    BIGINT NOT NULL DEFAULT 0,
        next_at     BIGINT NOT NULL,
        last_error  TEXT,
        created_at  BIGINT NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (channel, next_at);"#,
    // 7: which replica's claim holds a request, until when (`Backend::claim_request`):
    // a request cut short by a replica's crash is resumed by another once it runs out.
    "ALTER TABLE requests ADD COLUMN claimed_until BIGINT;",
    // 8: console sessions, shared by every replica (`postgres::sessions`).
    super::sessions::MIGRATION,
    // 9: listings walk requests newest first, a page at a time, in the order they list them.
    r#"CREATE INDEX requests_by_creation ON requests (created_at, id COLLATE "C");"#,
    // 10: which claim holds a request (`postgres::claims`): writes under a claim that ran out
    // and was taken over match nothing.
    "ALTER TABLE requests ADD COLUMN claim_id BIGINT;",
];

/// Any number, the same in every warden: the advisory lock replicas take to migrate.
const MIGRATION_LOCK: i64 = 0x7761_7264_656e; // "warden"

pub(super) async fn apply(client: &mut deadpool_postgres::Object) -> Fallible<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS warden_schema (version BIGINT NOT NULL);
         INSERT INTO warden_schema (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM warden_schema);",
    )
    .await?;
    let applied: i64 = tx
        .query_one("SELECT version FROM warden_schema", &[])
        .await?
        .get(0);
    let known = MIGRATIONS.len();
    if applied < 0 || applied as usize > known {
        return Err(format!(
            "schema version {applied} is newer than this warden knows ({known}); upgrade warden"
        )
        .into());
    }
    // One transaction for all: a failed migration leaves the schema as it was, and the lock
    // is held until every step is in.
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {}: {e}", version + 1))?;
        tx.execute(
            "UPDATE warden_schema SET version = $1",
            &[&(version as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
