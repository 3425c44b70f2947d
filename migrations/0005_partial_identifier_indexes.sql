-- 0005: the hardware identifier indexes hold only the devices that have
-- the identifier (issue 19).
--
-- A device without a udid (every Android device), an imei (most iOS ones)
-- or a serial was an entry keyed (tenant, NULL) in that identifier's index:
-- no lookup ever finds it there (`x = ?`, `x IN (…)` and the collision
-- probes never match NULL), yet every insert wrote it and every index page
-- it filled took room in the sync's page cache. SQLite uses a partial index
-- `WHERE x IS NOT NULL` for any `x = …` or `x IN (…)` term, so the lookups
-- (agent API, ISE, collisions) keep their plans; the unit tests pin them.
-- Same names, same columns: only the NULL entries go.

DROP INDEX devices_udid;
CREATE INDEX devices_udid ON devices (tenant_id, udid) WHERE udid IS NOT NULL;
DROP INDEX devices_serial;
CREATE INDEX devices_serial ON devices (tenant_id, serial) WHERE serial IS NOT NULL;
DROP INDEX devices_imei;
CREATE INDEX devices_imei ON devices (tenant_id, imei) WHERE imei IS NOT NULL;
DROP INDEX devices_mac;
CREATE INDEX devices_mac ON devices (tenant_id, mac) WHERE mac IS NOT NULL;
