-- 0004: what the Cisco ISE MDM API (CONTRACT §7) looks devices up by, so
-- that every answer is an index lookup (ISE's budget is 200 ms, ours 50 ms).

-- `querycriteria=username`: the devices of a user, by the MDM's user name
-- in any case (ISE sends the name the user authenticated with).
CREATE INDEX users_username ON users (tenant_id, username COLLATE NOCASE)
    WHERE username IS NOT NULL;

-- The compliance listing: devices at risk are in `devices_risk`; the ones
-- their MDM reports not compliant are few, and only they are indexed here.
CREATE INDEX devices_mdm_noncompliant ON devices (tenant_id, id) WHERE compliant = 0;
