-- Evaluation: the team's evaluation sets, the original model's figures on them (measured once
-- per CPU and thread count, then reused), and the evaluation a job asks for.

-- Owner: store::datasets. One uploaded evaluation set; the bytes live in the blob store, the
-- figures kept about it (kind, rows, token and label ranges) let a job be checked against a
-- model without reading the set again.
create table datasets (
    id          uuid primary key,
    team_id     uuid not null references teams (id) on delete cascade,
    name        text not null check (length(name) between 1 and 255),
    blob_sha256 text not null references blobs (sha256),
    bytes       bigint not null check (bytes > 0),
    kind        text not null check (kind in ('tokens', 'tensors')),
    stats       jsonb not null,
    created_by  uuid references tokens (id) on delete set null,
    created_at  timestamptz not null default now()
);
create index datasets_team_idx on datasets (team_id, id desc);
create index datasets_blob_idx on datasets (blob_sha256);

-- Owner: store::datasets. The original model's own figures (accuracy, latency) on a set, keyed
-- by where they were measured (CPU model, threads, runtime) so another machine measures anew.
create table eval_baselines (
    model_id   uuid not null references models (id) on delete cascade,
    dataset_id uuid not null references datasets (id) on delete cascade,
    runtime    text not null,
    figures    jsonb not null,
    created_at timestamptz not null default now(),
    primary key (model_id, dataset_id, runtime)
);

-- Owner: jobs::queue. The job's `eval` section, as submitted.
alter table jobs add column eval jsonb;
