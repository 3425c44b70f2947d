-- 0003: device posture, agent activation, the threat lifecycle and risk level.
--
-- Posture is what the device's MDM reports, rewritten by every sync and
-- lookup (NULL where the MDM does not say). Booleans are 0/1.
ALTER TABLE devices ADD COLUMN compliant INTEGER CHECK (compliant IN (0, 1));
ALTER TABLE devices ADD COLUMN enrolled INTEGER CHECK (enrolled IN (0, 1));
ALTER TABLE devices ADD COLUMN encrypted INTEGER CHECK (encrypted IN (0, 1));
ALTER TABLE devices ADD COLUMN passcode INTEGER CHECK (passcode IN (0, 1));
ALTER TABLE devices ADD COLUMN compromised INTEGER CHECK (compromised IN (0, 1));
ALTER TABLE devices ADD COLUMN manufacturer TEXT;
ALTER TABLE devices ADD COLUMN phone_number TEXT;
-- The risk level the MDM's listing reports it holds (BCDM's mtd_risk_level),
-- for drift repair; NULL where the listing does not say.
ALTER TABLE devices ADD COLUMN reported_risk TEXT;

-- The last successful POST /v1/agent/activate of the device (NULL: never).
ALTER TABLE devices ADD COLUMN activated_first_at TEXT;
ALTER TABLE devices ADD COLUMN activated_last_at TEXT;
ALTER TABLE devices ADD COLUMN agent_platform TEXT;
ALTER TABLE devices ADD COLUMN agent_version TEXT;
ALTER TABLE devices ADD COLUMN tracking_id_1 TEXT;
ALTER TABLE devices ADD COLUMN tracking_id_2 TEXT;

-- `secured`, or the highest severity among the device's open threats; kept
-- current in the transaction that changes the threats.
ALTER TABLE devices ADD COLUMN risk_level TEXT NOT NULL DEFAULT 'secured'
    CHECK (risk_level IN ('secured', 'low', 'medium', 'high', 'critical'));
-- Most devices are secured: the index holds only the others.
CREATE INDEX devices_risk ON devices (tenant_id, risk_level) WHERE risk_level <> 'secured';

-- An event's threat: its status and key (a missing key, null and "" are the
-- same key, stored as ''). Rows written before this migration were all
-- detections without a key.
ALTER TABLE threat_events ADD COLUMN status TEXT NOT NULL DEFAULT 'detected'
    CHECK (status IN ('detected', 'resolved'));
ALTER TABLE threat_events ADD COLUMN threat_key TEXT NOT NULL DEFAULT '';
-- Set when an event needs no further decision although it has neither a
-- device nor an action (a `resolved` event whose device no MDM knows).
ALTER TABLE threat_events ADD COLUMN settled_at TEXT;
-- The latest resolution of a threat, for out-of-order detections.
CREATE INDEX threat_events_resolutions ON threat_events (device_id, threat_type, threat_key, detected_at)
    WHERE status = 'resolved';

-- A threat on a device: opened by a `detected` event, closed by a `resolved`
-- event, an admin, or the device's removal. Closed rows are the history.
-- At most one open row per (device, type, key).
CREATE TABLE threats (
    id                 INTEGER PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    device_id          INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    threat_type        TEXT NOT NULL,
    threat_key         TEXT NOT NULL DEFAULT '',
    severity           TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    threat_name        TEXT,
    first_detected_at  TEXT NOT NULL,          -- the agents' clock
    last_detected_at   TEXT NOT NULL,
    opened_by_event    INTEGER REFERENCES threat_events (id) ON DELETE SET NULL,
    last_event         INTEGER REFERENCES threat_events (id) ON DELETE SET NULL,
    detections         INTEGER NOT NULL DEFAULT 1,
    -- Closing: when (our clock), as of when (the resolving event's
    -- detected_at; our clock for an admin or a removal), by what and why.
    closed_at          TEXT,
    resolved_at        TEXT,
    closed_by          TEXT CHECK (closed_by IN ('agent', 'admin', 'removal')),
    closed_by_event    INTEGER REFERENCES threat_events (id) ON DELETE SET NULL,
    close_reason       TEXT
) STRICT;
CREATE UNIQUE INDEX threats_open ON threats (device_id, threat_type, threat_key)
    WHERE closed_at IS NULL;
-- Not partial: the foreign key checks of devices need an index on device_id.
CREATE INDEX threats_device ON threats (device_id, threat_type, threat_key, resolved_at);
