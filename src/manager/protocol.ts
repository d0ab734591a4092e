import { z } from 'zod';

/**
 * The registration protocol between a proxy and the central manager (docs/manager-protocol.md).
 * Both sides use these schemas: the proxy (src/manager/client.ts) and the lab manager
 * (src/lab/manager.ts).
 */
export const PROTOCOL_VERSION = 1;

export const registerRequest = z.strictObject({
  protocolVersion: z.literal(PROTOCOL_VERSION),
  name: z.string().min(1).max(128),
  version: z.string().min(1).max(64),
  vm: z.strictObject({ moref: z.string().nullable(), biosUuid: z.string().nullable() }),
  hosts: z.array(z.strictObject({ moref: z.string(), name: z.string() })).max(10_000),
  datastores: z.array(z.strictObject({ moref: z.string(), name: z.string() })).max(10_000),
  capacity: z.strictObject({
    cpus: z.number().int().min(1),
    memoryBytes: z.number().int().min(0),
    diskConcurrency: z.number().int().min(1),
  }),
  apiUrl: z.string().url().nullable(),
});
export type RegisterRequest = z.infer<typeof registerRequest>;

export const registerResponse = z.object({
  proxyId: z.string().min(1).max(128),
  secret: z.string().min(32).max(512),
  heartbeatIntervalSeconds: z.number().int().min(1).max(3600),
});
export type RegisterResponse = z.infer<typeof registerResponse>;

export const heartbeatRequest = z.strictObject({
  protocolVersion: z.literal(PROTOCOL_VERSION),
  time: z.iso.datetime(),
  version: z.string(),
  status: z.enum(['ok', 'degraded']),
  load: z.strictObject({
    runningJobs: z.number().int().min(0),
    queuedJobs: z.number().int().min(0),
    diskConcurrency: z.number().int().min(1),
    loadAverage1m: z.number().min(0),
  }),
  health: z.strictObject({ database: z.boolean(), redis: z.boolean(), datastore: z.boolean() }),
});
export type HeartbeatRequest = z.infer<typeof heartbeatRequest>;

export const heartbeatResponse = z.object({
  heartbeatIntervalSeconds: z.number().int().min(1).max(3600),
});

/** Error codes a manager answers with (in `{"error": {"code", "message"}}`). */
export const MANAGER_ERROR_CODES = [
  'invalid_request',
  'invalid_token',
  'invalid_credentials',
  'proxy_revoked',
  'unknown_proxy',
  'unsupported_protocol',
] as const;
export type ManagerErrorCode = (typeof MANAGER_ERROR_CODES)[number];

export const managerError = z.object({
  error: z.object({ code: z.string(), message: z.string() }),
});
