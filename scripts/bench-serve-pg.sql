-- What one auto-approved request of scripts/bench-serve-pg asks of PostgreSQL (the statements
-- of host/src/store/postgres, in their order, with values of the same sizes), for pgbench to
-- run with no warden at all: the most requests per second the database alone manages on this
-- machine. Literals hold no colons: pgbench would read `:name` as a variable.
\set r random(1, 1000000000)
WITH inserted AS (
    INSERT INTO requests (id, flow, requester, fields, state, decision, created_by,
        idempotency_key, duration_seconds, created_at, updated_at, requester_profile, claimed_until)
    VALUES ('pgbench-' || :client_id || '-' || :r || '-' || txid_current(), 'fast',
        'alice@example.com', '{"reason" "bench"}', 'requested', 'continue', 'alice@example.com',
        NULL, NULL, 1796155536591, 1796155536591, NULL, 1796155566591)
    RETURNING id),
history AS (
    INSERT INTO request_history (request_id, seq, entry)
    SELECT id, 1, '{"at" 1796155536591,"step" "request","kind" "transition","from" null,"to" "requested","actor" "alice@example.com"}'
    FROM inserted),
audited AS (
    INSERT INTO audit_log (at, actor, action, request_id, detail)
    SELECT 1796155536591, 'alice@example.com', 'request', id, '{"flow" "fast","requester" "alice@example.com"}'
    FROM inserted)
SELECT id FROM inserted \gset
SELECT email, service, service_id, user_id FROM identities
WHERE lower(email) = lower('alice@example.com') AND service = 'victorops' AND service_id = 'bench-id';
BEGIN;
UPDATE requests SET claimed_until = NULL WHERE id = :id RETURNING state;
UPDATE requests SET state = 'escalated', decision = 'approve',
    reason = COALESCE('Auto-approved On-call engineer bench', reason),
    expires_at = COALESCE(NULL, expires_at), updated_at = 1796155536616
WHERE id = :id;
INSERT INTO request_history (request_id, seq, entry)
SELECT :id::text, last.seq + new.n, new.entry
FROM unnest(ARRAY[
    '{"at" 1796155536613,"step" "request","kind" "hook","hook" "on_request","ran" true,"outcome" "approve","reason" "Auto-approved On-call engineer bench","elapsed_ms" 7.1651609999999994}',
    '{"at" 1796155536613,"step" "request","kind" "hook","hook" "after_request","ran" false,"outcome" "skipped","elapsed_ms" 0.0}',
    '{"at" 1796155536613,"step" "approve","kind" "hook","hook" "on_approve","ran" false,"outcome" "skipped","elapsed_ms" 0.0}',
    '{"at" 1796155536616,"step" "approve","kind" "transition","from" "requested","to" "approved","actor" "flow `fast` plugin","reason" "Auto-approved On-call engineer bench"}',
    '{"at" 1796155536613,"step" "approve","kind" "hook","hook" "after_approve","ran" false,"outcome" "skipped","elapsed_ms" 0.0}',
    '{"at" 1796155536613,"step" "escalate","kind" "hook","hook" "on_escalate","ran" false,"outcome" "skipped","elapsed_ms" 0.0}',
    '{"at" 1796155536616,"step" "escalate","kind" "transition","from" "approved","to" "escalated","actor" "warden"}',
    '{"at" 1796155536613,"step" "escalate","kind" "hook","hook" "after_escalate","ran" false,"outcome" "skipped","elapsed_ms" 0.0}'
]::text[]) WITH ORDINALITY AS new (entry, n),
(SELECT COALESCE(MAX(seq), 0) AS seq FROM request_history WHERE request_id = :id::text) last;
INSERT INTO audit_log (at, actor, action, request_id, detail)
SELECT 1796155536616, new.actor, new.action, :id, new.detail
FROM unnest(ARRAY['flow `fast` plugin', 'warden'], ARRAY['approve', 'escalate'],
    ARRAY['{"from" "requested","to" "approved","reason" "Auto-approved On-call engineer bench"}',
          '{"from" "approved","to" "escalated","reason" null}'])
    WITH ORDINALITY AS new (actor, action, detail, n)
ORDER BY new.n;
SELECT id, flow, requester, fields, state, decision, reason, created_by, duration_seconds,
    expires_at, created_at, updated_at, requester_profile
FROM requests WHERE id = :id;
SELECT entry FROM request_history WHERE request_id = :id ORDER BY seq;
COMMIT;
