-- GDPR erasure (drumbeat_api.erase_contact): a contact's personal data is wiped everywhere while the rows
-- that count (deliveries, events, enrollments) stay, anonymous; what is left of the contact is a row with
-- no name and no address, marked erased_at. Its phone and email live on only as keyed digests in
-- erased_identities, so that a re-import cannot bring the person back into a sequence.
ALTER TABLE drumbeat.contacts ADD COLUMN erased_at timestamptz;
COMMENT ON COLUMN drumbeat.contacts.erased_at IS 'When the person''s data was erased on request (GDPR): the row stays, anonymous, for the counts.';
ALTER TABLE drumbeat.contacts DROP CONSTRAINT contacts_reachable;
ALTER TABLE drumbeat.contacts ADD CONSTRAINT contacts_reachable CHECK (phone IS NOT NULL OR email IS NOT NULL OR erased_at IS NOT NULL);

CREATE TABLE drumbeat.erased_identities (
    workspace_id uuid NOT NULL REFERENCES drumbeat.workspaces (id) ON DELETE CASCADE,
    kind text NOT NULL,
    digest text NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (workspace_id, kind, digest),
    CONSTRAINT erased_identities_kind_known CHECK (kind IN ('phone', 'email')),
    CONSTRAINT erased_identities_digest_shape CHECK (digest ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE drumbeat.erased_identities IS 'Suppression list of erased contacts: SHA-256 digests of (workspace, kind, address), never the address itself; an import of a listed phone or email is refused.';
COMMENT ON INDEX drumbeat.erased_identities_pkey IS 'Serves the suppression check of contact imports (one probe per address).';
ALTER TABLE drumbeat.erased_identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE drumbeat.erased_identities FORCE ROW LEVEL SECURITY;

-- CRMs that mirror contacts learn of an erasure to erase their copy.
INSERT INTO drumbeat.event_types (kind, type, type_without_delivery) VALUES ('contact_erased', 'contact.erased', NULL);
