-- A notification is recorded at most once per meaning, whatever the event id: one alert per
-- (customer, kind, transaction) and one welcome per customer. An outcome replayed under a new
-- `ce_id` then finds its alert recorded and changes nothing. `once_key` is the transaction id
-- (empty for a welcome). Rows recorded before this migration keep their place in the log: the
-- first of each (customer, kind, transaction) takes the key, any later duplicate keeps a key of
-- its own (`duplicate:<id>`). (The old unique (event_id, customer_id, kind) stays; it is implied.)
ALTER TABLE deliveries ADD COLUMN once_key TEXT;
UPDATE deliveries SET once_key = COALESCE(transaction_id, '')
WHERE id = (
    SELECT MIN(first.id) FROM deliveries first
    WHERE first.customer_id = deliveries.customer_id
      AND first.kind = deliveries.kind
      AND COALESCE(first.transaction_id, '') = COALESCE(deliveries.transaction_id, '')
);
UPDATE deliveries SET once_key = 'duplicate:' || id WHERE once_key IS NULL;
CREATE UNIQUE INDEX deliveries_once_by_meaning ON deliveries (customer_id, kind, once_key);
