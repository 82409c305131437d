-- Compression jobs: the queue is the jobs table itself (the job row is the product's resource).
-- Owner of every table here: jobs::queue (results are written by the queue's fenced functions).

create type job_state as enum ('queued', 'running', 'succeeded', 'failed', 'canceled');

create table jobs (
    id               uuid primary key,
    team_id          uuid not null references teams (id) on delete cascade,
    -- Kept when the model is deleted later (history stays), hence no cascade.
    model_id         uuid references models (id) on delete set null,
    model_sha256     text not null,
    name             text,
    recipe           jsonb not null,
    state            job_state not null default 'queued',
    -- Incremented by each claim; every write by a worker is fenced on (id, attempt, running).
    attempt          integer not null default 0 check (attempt >= 0),
    max_attempts     integer not null check (max_attempts >= 1),
    run_at           timestamptz not null default now(),
    lease_until      timestamptz,
    worker           text,
    cancel_requested boolean not null default false,
    progress         jsonb not null default '{}',
    error            text,
    result           jsonb,
    idempotency_key  text,
    request_hash     bytea,
    created_by       uuid references tokens (id) on delete set null,
    created_at       timestamptz not null default now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz not null default now(),
    check ((state = 'running') = (lease_until is not null))
);
create unique index jobs_idempotency_idx on jobs (team_id, idempotency_key) where idempotency_key is not null;
create index jobs_claim_idx on jobs (run_at, id) where state = 'queued';
create index jobs_lease_idx on jobs (lease_until) where state = 'running';
create index jobs_team_idx on jobs (team_id, id desc);
create index jobs_model_idx on jobs (model_id);

-- Per-tensor metrics of a succeeded job, measured against the original weights.
create table job_tensors (
    job_id        uuid not null references jobs (id) on delete cascade,
    name          text not null,
    scheme        text not null,
    dtype         text not null,
    shape         jsonb not null,
    bytes_in      bigint not null,
    bytes_out     bigint not null,
    sparsity      double precision not null,
    rel_error     double precision not null,
    sqnr_db       double precision,
    cosine        double precision,
    max_abs_error double precision not null,
    primary key (job_id, name)
);

-- The artifact files of a succeeded job; the bytes live in the blob store.
create table job_files (
    job_id      uuid not null references jobs (id) on delete cascade,
    name        text not null,
    blob_sha256 text not null references blobs (sha256),
    bytes       bigint not null,
    primary key (job_id, name)
);
create index job_files_blob_idx on job_files (blob_sha256);
