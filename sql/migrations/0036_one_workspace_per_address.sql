-- 0036: a number or from-address belongs to one workspace. Replies and unmatched texts are routed by the
-- number they were sent to, so a tenant registering another's number would receive them. Another
-- workspace may use it only when the operator shares it (`drumbeat senders share`): its sender row is
-- then marked shared, and the owner's is the one row per address that is not.
ALTER TABLE drumbeat.senders ADD COLUMN shared boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN drumbeat.senders.shared IS 'Set by the operator (drumbeat.share_sender): this workspace sends from an address another workspace owns; inbound texts reach it only from people it texted.';

-- Addresses already used by several workspaces stay usable by all of them: the oldest registration owns
-- the address, the later ones count as shared (until now every tenant could add any number).
UPDATE drumbeat.senders se SET shared = true
WHERE EXISTS (SELECT 1 FROM drumbeat.senders o
              WHERE o.channel = se.channel AND o.address = se.address AND (o.created_at, o.id) < (se.created_at, se.id));

CREATE UNIQUE INDEX senders_owner_key ON drumbeat.senders (channel, address) WHERE NOT shared;
COMMENT ON INDEX drumbeat.senders_owner_key IS 'One owning workspace per number and from-address: serves create_sender''s conflict and inbound routing of unmatched texts to the owner.';
