import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Backend } from './backend.js';
import { ObjectNotFoundError } from './backend.js';
import { CorruptObjectError, RepositoryNotFoundError, RepositoryVersionError } from './errors.js';
import { FORMAT_VERSION, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, paths } from './format.js';
import { mac } from './keys.js';
import { CHUNK_ID_ALGORITHMS, DEFAULT_CHUNK_ID_ALGORITHM, type ChunkIdAlgorithm } from './chunk-codec.js';

/** The repository's config object (plain JSON; authenticated by `mac` once the key is unlocked). */
export const configSchema = z.object({
  format: z.literal('vbproxy-repository'),
  version: z.number().int().positive(),
  id: z.string(),
  chunkSize: z.number().int().min(MIN_CHUNK_SIZE).max(MAX_CHUNK_SIZE),
  chunkId: z.enum(CHUNK_ID_ALGORITHMS),
  cipher: z.literal('xchacha20-poly1305'),
  compression: z.literal('zstd-if-smaller'),
  createdAt: z.string(),
  mac: z.string().optional(),
});
export type RepositoryConfig = z.infer<typeof configSchema>;

export function newConfig(
  chunkSize: number,
  chunkId: ChunkIdAlgorithm = DEFAULT_CHUNK_ID_ALGORITHM,
): RepositoryConfig {
  return {
    format: 'vbproxy-repository',
    version: FORMAT_VERSION,
    id: randomUUID(),
    chunkSize,
    chunkId,
    cipher: 'xchacha20-poly1305',
    compression: 'zstd-if-smaller',
    createdAt: new Date().toISOString(),
  };
}

function macInput(c: RepositoryConfig): Buffer {
  const { mac: _m, ...rest } = c;
  return Buffer.from(JSON.stringify(rest), 'utf8');
}

export function signConfig(c: RepositoryConfig, key: Buffer): RepositoryConfig {
  return { ...c, mac: mac(key, macInput(c)).toString('base64') };
}

export function checkConfigMac(c: RepositoryConfig, key: Buffer, location: string): void {
  if (!c.mac || !mac(key, macInput(c)).equals(Buffer.from(c.mac, 'base64'))) {
    throw new CorruptObjectError(
      'config',
      `${location}/config`,
      'authentication failed (the config was modified)',
    );
  }
}

/** Reads the config, refusing newer formats before anything else is interpreted. */
export async function readConfig(backend: Backend): Promise<RepositoryConfig> {
  let raw: Buffer;
  try {
    raw = await backend.read(paths.config);
  } catch (err) {
    if (err instanceof ObjectNotFoundError) throw new RepositoryNotFoundError(backend.location, err);
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new CorruptObjectError('config', `${backend.location}/config`, 'not valid JSON', err);
  }
  const version = (json as { version?: unknown })?.version;
  if (typeof version === 'number' && version > FORMAT_VERSION) {
    throw new RepositoryVersionError(backend.location, version, FORMAT_VERSION);
  }
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    throw new CorruptObjectError(
      'config',
      `${backend.location}/config`,
      `invalid: ${parsed.error.issues[0]?.message ?? 'schema mismatch'}`,
    );
  }
  return parsed.data;
}
