import { z } from 'zod';

/**
 * The shape of /etc/vbproxy/config.json. Objects are strict (an unknown key is an error, so a
 * misspelt key or an inline secret such as `"password"` is refused rather than ignored). Secrets
 * are never values in this file: keys ending in `File` name files that hold them (mode 0600).
 */

const absolutePath = z
  .string()
  .min(1)
  .refine((p) => p.startsWith('/'), { message: 'must be an absolute path' });
const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//.test(u), { message: 'must be an http:// or https:// URL' });

function hasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return false;
  }
}

export const proxySchema = z.strictObject({
  name: z.string().min(1).max(128),
  vmMoref: z
    .string()
    .regex(/^vm-\d+$/, 'must be a VM managed object reference such as vm-42')
    .optional(),
  biosUuid: z.string().uuid().optional(),
});

export const managerSchema = z.strictObject({
  url: httpUrl,
  enrollmentTokenFile: absolutePath,
  credentialsFile: absolutePath,
  caFile: absolutePath.optional(),
});

export const apiSchema = z
  .strictObject({
    listen: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8443),
    tls: z.strictObject({ certFile: absolutePath, keyFile: absolutePath }).optional(),
    plainHttp: z.boolean().default(false),
    tokensFile: absolutePath,
    /** Largest accepted request body in bytes (bigger bodies get 413). */
    bodyLimitBytes: z
      .number()
      .int()
      .min(1024)
      .max(16 * 1024 * 1024)
      .default(256 * 1024),
  })
  .refine((a) => a.plainHttp || a.tls !== undefined, {
    message: 'api.tls (certFile and keyFile) is required unless api.plainHttp is true',
    path: ['tls'],
  });

export const configSchema = z.strictObject({
  proxy: proxySchema,
  manager: managerSchema.optional(),
  api: apiSchema,
  database: z.strictObject({
    url: z
      .string()
      .refine((u) => /^postgres(ql)?:\/\//.test(u), { message: 'must be a postgres:// or postgresql:// URL' })
      .refine((u) => !hasPassword(u), {
        message: 'must not contain a password; put it in database.passwordFile',
      }),
    passwordFile: absolutePath.optional(),
  }),
  redis: z.strictObject({
    url: z
      .string()
      .refine((u) => /^rediss?:\/\//.test(u), { message: 'must be a redis:// or rediss:// URL' })
      .refine((u) => !hasPassword(u), {
        message: 'must not contain a password; put it in redis.passwordFile',
      }),
    passwordFile: absolutePath.optional(),
    prefix: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'must contain only letters, digits, "_" and "-"')
      .default('vbproxy'),
  }),
  repository: z.strictObject({
    path: absolutePath,
    passphraseFile: absolutePath,
  }),
  catalog: z.strictObject({ secretKeyFile: absolutePath }),
  vddk: z
    .strictObject({
      libDir: absolutePath,
      configFile: absolutePath.optional(),
    })
    .optional(),
  worker: z
    .strictObject({
      diskConcurrency: z.number().int().min(1).max(64).default(4),
    })
    .default({ diskConcurrency: 4 }),
  /** Where a process without the API (the worker) serves /metrics. */
  metrics: z
    .strictObject({
      listen: z.string().min(1).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(9464),
    })
    .default({ listen: '127.0.0.1', port: 9464 }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

/**
 * The key paths (dotted) whose values name secret files. Such a file must not be readable or
 * writable by group or others (0600 or 0400); a looser file makes the load fail.
 */
export const SECRET_FILE_KEYS = [
  'manager.enrollmentTokenFile',
  'manager.credentialsFile',
  'api.tls.keyFile',
  'api.tokensFile',
  'repository.passphraseFile',
  'catalog.secretKeyFile',
  'database.passwordFile',
  'redis.passwordFile',
] as const;
export type SecretFileKey = (typeof SECRET_FILE_KEYS)[number];
