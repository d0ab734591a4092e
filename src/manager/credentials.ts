import { createHash } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { checkSecretFileMode } from '../config/load.js';
import { VbproxyError } from '../errors.js';

/** What registration leaves on disk (manager.credentialsFile, mode 0600). */
export const credentialsSchema = z.strictObject({
  managerUrl: z.string(),
  proxyId: z.string(),
  secret: z.string(),
  registeredAt: z.string(),
  /** SHA-256 of the enrollment token used, so that a revoked proxy does not re-use it. */
  enrollmentTokenSha256: z.string(),
});
export type Credentials = z.infer<typeof credentialsSchema>;

export function tokenFingerprint(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function readCredentials(file: string): Credentials | undefined {
  checkSecretFileMode(file, 'manager.credentialsFile', file);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new VbproxyError('MANAGER_CREDENTIALS', `cannot read the manager credentials ${file}`, {
      cause: err,
    });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    raw = undefined;
  }
  const r = credentialsSchema.safeParse(raw);
  if (!r.success) {
    throw new VbproxyError(
      'MANAGER_CREDENTIALS',
      `${file} is not a valid credentials file; delete it and register again`,
    );
  }
  return r.data;
}

/** Writes the credentials atomically with mode 0600. */
export function writeCredentials(file: string, c: Credentials): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export function deleteCredentials(file: string): void {
  rmSync(file, { force: true });
}
