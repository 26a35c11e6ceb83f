-- Inbox keys are pruned once their topic can no longer redeliver the record (see
-- crates/platform/src/retention.rs): the pruner finds a consumer's oldest keys by this index.
-- (Numbered after issue 25 so that it collides with no other branch's next migration.)
CREATE INDEX inbox_by_time ON inbox (consumer, processed_at);
