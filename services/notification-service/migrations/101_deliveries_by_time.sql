-- The latest deliveries across customers (`GET /notifications/recent`, the dashboard).
CREATE INDEX deliveries_by_time ON deliveries (created_at);
