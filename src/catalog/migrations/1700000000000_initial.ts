import type { MigrationBuilder } from 'node-pg-migrate';

/** The first catalog schema. See docs/configuration.md and the catalog module for what each table holds. */
export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(`
CREATE TABLE vcenters (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL UNIQUE,
  url text NOT NULL,
  username text NOT NULL,
  -- libsodium secretbox: 24-byte nonce followed by the MAC and ciphertext, under catalog.secretKeyFile
  password_sealed bytea NOT NULL,
  thumbprint text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE proxies (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL UNIQUE,
  vm_moref text,
  bios_uuid text,
  version text NOT NULL,
  manager_proxy_id text,
  disk_concurrency integer NOT NULL CHECK (disk_concurrency > 0),
  status text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline', 'draining')),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE policies (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL UNIQUE,
  vcenter_id uuid NOT NULL REFERENCES vcenters(id) ON DELETE RESTRICT,
  -- {"morefs": [...], "folders": [...], "namePatterns": [...]}
  vm_selection jsonb NOT NULL,
  -- {"mode": "all" | "include" | "exclude", "diskKeys": [...]}
  disk_selection jsonb NOT NULL,
  consistency text NOT NULL CHECK (consistency IN ('application', 'filesystem', 'crash')),
  consistency_fallback text NOT NULL CHECK (consistency_fallback IN ('filesystem', 'crash', 'fail')),
  transports text[] NOT NULL,
  schedule text,
  -- {"keepLast", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"}
  retention jsonb NOT NULL,
  repository text NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
  id uuid PRIMARY KEY,
  type text NOT NULL CHECK (type IN ('backup', 'restore', 'verify', 'prune', 'gc', 'catalog-rebuild')),
  state text NOT NULL DEFAULT 'queued'
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  trigger text NOT NULL CHECK (trigger IN ('manual', 'schedule', 'api')),
  policy_id uuid REFERENCES policies(id) ON DELETE SET NULL,
  vcenter_id uuid REFERENCES vcenters(id) ON DELETE SET NULL,
  vm_moref text,
  vm_name text,
  proxy_id uuid REFERENCES proxies(id) ON DELETE SET NULL,
  queue text NOT NULL,
  params jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- {"doneBytes", "totalBytes", "phase"}
  progress jsonb,
  error_code text,
  error_message text,
  cancel_requested boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz
);
CREATE INDEX jobs_created_at_idx ON jobs (created_at DESC);
CREATE INDEX jobs_vm_idx ON jobs (vcenter_id, vm_moref, created_at DESC);
CREATE INDEX jobs_state_idx ON jobs (state);

CREATE TABLE job_events (
  id bigserial PRIMARY KEY,
  job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  at timestamptz NOT NULL DEFAULT now(),
  level text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
  message text NOT NULL,
  data jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

CREATE TABLE restore_points (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  job_id uuid REFERENCES jobs(id) ON DELETE SET NULL,
  vcenter_id uuid REFERENCES vcenters(id) ON DELETE SET NULL,
  vm_moref text NOT NULL,
  vm_name text NOT NULL,
  repository text NOT NULL,
  -- the restore point's name in the repository (its manifest)
  manifest_name text NOT NULL,
  snapshot_time timestamptz NOT NULL,
  consistency text NOT NULL CHECK (consistency IN ('application', 'filesystem', 'crash')),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (repository, manifest_name)
);
CREATE INDEX restore_points_vm_idx ON restore_points (vm_moref, snapshot_time DESC);

CREATE TABLE restore_point_disks (
  restore_point_id uuid NOT NULL REFERENCES restore_points(id) ON DELETE CASCADE,
  disk_key integer NOT NULL,
  label text NOT NULL,
  capacity_bytes bigint NOT NULL CHECK (capacity_bytes >= 0),
  change_id text,
  cbt_uuid text,
  mode text NOT NULL CHECK (mode IN ('full', 'incremental')),
  bytes_read bigint NOT NULL DEFAULT 0,
  bytes_written bigint NOT NULL DEFAULT 0,
  duration_ms integer NOT NULL DEFAULT 0,
  transport text NOT NULL CHECK (transport IN ('hotadd', 'nbdssl', 'nbd', 'file')),
  PRIMARY KEY (restore_point_id, disk_key)
);

CREATE TABLE hotadd_ledger (
  id bigserial PRIMARY KEY,
  job_id uuid REFERENCES jobs(id) ON DELETE SET NULL,
  proxy_id uuid REFERENCES proxies(id) ON DELETE SET NULL,
  proxy_vm_moref text NOT NULL,
  vm_moref text NOT NULL,
  disk_path text NOT NULL,
  controller_key integer,
  unit_number integer,
  attached_at timestamptz NOT NULL DEFAULT now(),
  detached_at timestamptz,
  detached_by text CHECK (detached_by IN ('job', 'preflight', 'operator'))
);
CREATE INDEX hotadd_ledger_open_idx ON hotadd_ledger (proxy_vm_moref) WHERE detached_at IS NULL;
`);
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.sql(
    `DROP TABLE hotadd_ledger, restore_point_disks, restore_points, job_events, jobs, policies, proxies, vcenters`,
  );
}
