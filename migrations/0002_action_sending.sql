-- Set when the dispatcher hands a claimed action to its MDM (the gate that
-- cancel-destructive and cancel race with); cleared with the claim. A row
-- claimed but without it is only waiting for its turn and may be cancelled.
ALTER TABLE actions ADD COLUMN sending_at TEXT;
-- The hourly cap of destructive actions at send time counts recent sends.
CREATE INDEX actions_tenant_sent ON actions (tenant_id, sent_at) WHERE sent_at IS NOT NULL;
