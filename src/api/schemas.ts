import { z } from 'zod';
import { JOB_STATES, JOB_TYPES } from '../catalog/jobs.js';

/**
 * The zod schemas of every API request and response. The validation middleware and the OpenAPI
 * document (openapi.ts) both read them from the route table, so the document cannot drift from what
 * the API accepts.
 */

export const idParams = z.strictObject({ id: z.uuid() });
/** A folder's moref as vCenter numbers them (group-v3, group-h4, ...): the pattern's body. */
const FOLDER_MOREF = 'group-[a-z]?\\d+';
const folderMoref = z
  .string()
  .regex(new RegExp(`^${FOLDER_MOREF}$`), 'must be a folder managed object reference such as group-v3');
/**
 * A policy's folder: a folder moref, or an absolute inventory path (`/<datacenter>/vm/<folder>/...`,
 * govc's notation), resolved when the policy runs.
 */
const policyFolder = z
  .string()
  .max(4096)
  .regex(
    new RegExp(`^(${FOLDER_MOREF}|(/[^/]+)+)$`),
    'must be a folder managed object reference such as group-v3, or an inventory path starting with / whose segments are not empty, such as /dc1/vm/prod',
  );
export const vmMoref = z.string().regex(/^vm-\d+$/, 'must be a VM managed object reference such as vm-42');
const timestamp = z.iso.datetime({ offset: true });
const nameString = z.string().min(1).max(128);
const nullableTimestamp = z.string().nullable();

export const errorResponse = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
});

// ---- vCenters
export const vcenterBody = z.strictObject({
  name: nameString,
  url: z
    .string()
    .url()
    .refine((u) => /^https:\/\//.test(u), {
      message: 'must be an https:// URL such as https://vc.example.com/sdk',
    }),
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(1024),
  thumbprint: z
    .string()
    .regex(
      /^([0-9A-Fa-f]{2}:){19,31}[0-9A-Fa-f]{2}$/,
      'must be a SHA-1 or SHA-256 certificate thumbprint (hex pairs joined by ":")',
    )
    .optional(),
});
export const vcenterResponse = z.object({
  id: z.uuid(),
  name: z.string(),
  url: z.string(),
  username: z.string(),
  thumbprint: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export const vcenterList = z.object({ items: z.array(vcenterResponse) });
export const connectionTestResponse = z.object({ ok: z.literal(true), message: z.string() });

// ---- policies
export const policyBody = z.strictObject({
  name: nameString,
  vcenterId: z.uuid(),
  vmSelection: z
    .strictObject({
      morefs: z.array(vmMoref).max(10_000).default([]),
      folders: z.array(policyFolder).max(1000).default([]),
      namePatterns: z.array(z.string().min(1).max(256)).max(1000).default([]),
    })
    .refine((s) => s.morefs.length + s.folders.length + s.namePatterns.length > 0, {
      message: 'must select at least one VM (morefs, folders or namePatterns)',
    }),
  diskSelection: z
    .strictObject({
      mode: z.enum(['all', 'include', 'exclude']),
      diskKeys: z.array(z.number().int().min(0)).max(256).default([]),
    })
    .default({ mode: 'all', diskKeys: [] }),
  consistency: z.enum(['application', 'filesystem', 'crash']).default('filesystem'),
  consistencyFallback: z.enum(['filesystem', 'crash', 'fail']).default('crash'),
  transports: z
    .array(z.enum(['hotadd', 'nbdssl', 'nbd']))
    .min(1)
    .max(3)
    .refine((t) => new Set(t).size === t.length, { message: 'must not repeat a transport' })
    .default(['hotadd', 'nbdssl']),
  schedule: z
    .string()
    .regex(/^\s*(\S+\s+){4,5}\S+\s*$/, 'must be a cron expression with 5 or 6 fields')
    .nullable()
    .default(null),
  retention: z
    .strictObject({
      keepLast: z.number().int().min(1).max(10_000).optional(),
      keepDaily: z.number().int().min(0).max(10_000).optional(),
      keepWeekly: z.number().int().min(0).max(10_000).optional(),
      keepMonthly: z.number().int().min(0).max(10_000).optional(),
      keepYearly: z.number().int().min(0).max(1000).optional(),
    })
    .refine((r) => Object.values(r).some((v) => v !== undefined && v > 0), {
      message: 'must keep something (set at least one keep* value above 0)',
    }),
  repository: z.string().min(1).max(1024).optional(),
  enabled: z.boolean().default(true),
});
export const policyResponse = z.object({
  id: z.uuid(),
  name: z.string(),
  vcenterId: z.uuid(),
  vmSelection: z.object({
    morefs: z.array(z.string()),
    folders: z.array(z.string()),
    namePatterns: z.array(z.string()),
  }),
  diskSelection: z.object({ mode: z.enum(['all', 'include', 'exclude']), diskKeys: z.array(z.number()) }),
  consistency: z.enum(['application', 'filesystem', 'crash']),
  consistencyFallback: z.enum(['filesystem', 'crash', 'fail']),
  transports: z.array(z.enum(['hotadd', 'nbdssl', 'nbd'])),
  schedule: z.string().nullable(),
  retention: z.record(z.string(), z.number()),
  repository: z.string(),
  enabled: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export const policyList = z.object({ items: z.array(policyResponse) });
export const policyRunBody = z.strictObject({
  vmMorefs: z.array(vmMoref).min(1).max(10_000).optional(),
});
export const policyRunResponse = z.object({
  jobs: z.array(
    z.object({
      vmMoref: z.string(),
      jobId: z.uuid(),
      queued: z.boolean(),
      reason: z.string().optional(),
    }),
  ),
});

// ---- jobs
export const jobQuery = z.strictObject({
  type: z.enum(JOB_TYPES).optional(),
  state: z.enum(JOB_STATES).optional(),
  policyId: z.uuid().optional(),
  vm: vmMoref.optional(),
  since: timestamp.optional(),
  until: timestamp.optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
export const jobProgress = z.object({
  doneBytes: z.number().min(0),
  totalBytes: z.number().min(0),
  phase: z.string().optional(),
});
const progress = jobProgress;
export const jobResponse = z.object({
  id: z.uuid(),
  type: z.enum(JOB_TYPES),
  state: z.enum(JOB_STATES),
  trigger: z.enum(['manual', 'schedule', 'api']),
  policyId: z.uuid().nullable(),
  vcenterId: z.uuid().nullable(),
  vmMoref: z.string().nullable(),
  vmName: z.string().nullable(),
  proxyId: z.uuid().nullable(),
  queue: z.string(),
  params: z.record(z.string(), z.unknown()),
  progress: progress.nullable(),
  errorCode: z.string().nullable(),
  errorMessage: z.string().nullable(),
  cancelRequested: z.boolean(),
  createdAt: z.string(),
  startedAt: nullableTimestamp,
  finishedAt: nullableTimestamp,
});
export const jobList = z.object({ items: z.array(jobResponse) });
export const jobDetail = jobResponse.extend({
  queueState: z.string().nullable(),
  events: z.array(
    z.object({
      id: z.number(),
      at: z.string(),
      level: z.enum(['debug', 'info', 'warn', 'error']),
      message: z.string(),
      data: z.record(z.string(), z.unknown()).nullable(),
    }),
  ),
});
export const jobAccepted = z.object({ jobId: z.uuid(), queue: z.string() });

// ---- restore points
export const restorePointQuery = z.strictObject({
  vm: vmMoref.optional(),
  vcenterId: z.uuid().optional(),
  from: timestamp.optional(),
  to: timestamp.optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
export const restorePointResponse = z.object({
  id: z.uuid(),
  jobId: z.uuid().nullable(),
  vcenterId: z.uuid().nullable(),
  vmMoref: z.string(),
  vmName: z.string(),
  repository: z.string(),
  manifestName: z.string(),
  snapshotTime: z.string(),
  consistency: z.enum(['application', 'filesystem', 'crash']),
  createdAt: z.string(),
});
export const restorePointList = z.object({ items: z.array(restorePointResponse) });
export const restorePointDetail = restorePointResponse.extend({
  disks: z.array(
    z.object({
      diskKey: z.number(),
      label: z.string(),
      capacityBytes: z.number(),
      changeId: z.string().nullable(),
      cbtUuid: z.string().nullable(),
      mode: z.enum(['full', 'incremental']),
      bytesRead: z.number(),
      bytesWritten: z.number(),
      durationMs: z.number(),
      transport: z.enum(['hotadd', 'nbdssl', 'nbd', 'file']),
    }),
  ),
});

// ---- restores
const diskKeys = z.array(z.number().int().min(0)).min(1).max(256).optional();
export const restoreBody = z.strictObject({
  restorePointId: z.uuid(),
  target: z.discriminatedUnion('kind', [
    z.strictObject({
      kind: z.literal('file'),
      directory: z
        .string()
        .min(1)
        .refine((p) => p.startsWith('/'), { message: 'must be an absolute path on the proxy' }),
      diskKeys,
    }),
    z.strictObject({ kind: z.literal('vm'), vcenterId: z.uuid(), vmMoref, diskKeys }),
    z.strictObject({
      kind: z.literal('new-vm'),
      vcenterId: z.uuid(),
      name: nameString,
      datastore: z.string().min(1).max(256).optional(),
      folder: folderMoref.optional(),
    }),
  ]),
});

// ---- repository
export const repositoryStatus = z.object({
  path: z.string(),
  reachable: z.boolean(),
  totalBytes: z.number().nullable(),
  freeBytes: z.number().nullable(),
  restorePoints: z.number(),
  vms: z.number(),
  lastRestorePointAt: z.string().nullable(),
  error: z.string().optional(),
});
export const verifyBody = z.strictObject({ readData: z.boolean().default(true) });
export const emptyBody = z.strictObject({});

// ---- proxy, health
const check = z.object({ ok: z.boolean(), message: z.string().optional() });
export const healthChecks = z.object({ database: check, redis: check, datastore: check });
export const proxyResponse = z.object({
  name: z.string(),
  version: z.string(),
  vmMoref: z.string().nullable(),
  biosUuid: z.string().nullable(),
  capacity: z.object({ diskConcurrency: z.number(), cpus: z.number(), memoryBytes: z.number() }),
  registration: z.object({ state: z.string(), proxyId: z.string().nullable() }),
  health: healthChecks,
});
export const healthz = z.object({ status: z.literal('ok') });
export const readyz = z.object({ ready: z.boolean(), checks: healthChecks });
