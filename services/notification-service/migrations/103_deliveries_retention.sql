-- An ended delivery's body is emptied once no send can need it (DELIVERY_BODY_RETENTION_SECS,
-- src/retention.rs): the pruner finds the bodies still held, oldest first, by this index, and
-- the rows it emptied leave it (so each round reads only what is left to do).
CREATE INDEX deliveries_with_body ON deliveries (updated_at) WHERE body <> '';
