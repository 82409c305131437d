-- Identical uploads: a model's duplicate_of is the team's earliest other model with the same
-- content digest, looked up per listed model.
create index models_team_sha_idx on models (team_id, sha256, created_at);
