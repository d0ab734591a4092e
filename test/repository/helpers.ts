import { mkdtemp, rm, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Repository } from '../../src/repository/repository.js';
import { RawImageSource } from '../../src/pipeline/image-file.js';
import type { Extent } from '../../src/pipeline/disk.js';
import type { Manifest } from '../../src/repository/manifest.js';

export const PASSPHRASE = 'correct horse battery staple 7f3a';
/** Cheap Argon2id for tests (the product default is libsodium's INTERACTIVE). */
export const TEST_KDF = { opslimit: 1, memlimit: 1024 * 1024 };
export const CHUNK = 64 * 1024;

export const cliPath = new URL('../../src/cli/main.js', import.meta.url).pathname;

export async function tempDir(prefix: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `vbproxy-${prefix}-`));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

export async function newRepo(dir: string, chunkSize = CHUNK): Promise<Repository> {
  return Repository.init(join(dir, 'repo'), PASSPHRASE, { chunkSize, kdf: TEST_KDF });
}

/** A deterministic pseudo-random buffer (xorshift), for content that does not compress. */
export function noise(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i - (i + 4 > length ? i + 4 - length : 0));
  }
  return b;
}

export function text(length: number, seed: number): Buffer {
  let s = '';
  let i = seed;
  while (s.length < length) s += `line ${i++} the quick brown fox jumps over the lazy dog ${i % 97}\n`;
  return Buffer.from(s.slice(0, length));
}

/**
 * Writes an image of `size` bytes from pieces at offsets; the rest stays holes. Returns its path.
 */
export async function makeImage(
  path: string,
  size: number,
  pieces: Array<[number, Buffer]>,
): Promise<string> {
  const fh = await open(path, 'w');
  await fh.truncate(size);
  for (const [off, data] of pieces) await fh.write(data, 0, data.length, off);
  await fh.close();
  return path;
}

/** An image with holes, written zeros, text, noise and duplicates; size not a multiple of 64 KiB. */
export async function mixedImage(path: string, seed = 1): Promise<string> {
  const size = 5 * 1024 * 1024 + 12345;
  const n1 = noise(300 * 1024, seed);
  return makeImage(path, size, [
    [0, text(70 * 1024, seed)],
    [256 * 1024, n1],
    [1024 * 1024, Buffer.alloc(512 * 1024)], // written zeros
    [2 * 1024 * 1024, n1], // duplicate at a chunk-aligned offset
    [4 * 1024 * 1024 + 4096 * 3, n1.subarray(0, 100 * 1024)], // duplicate at a 4 KiB offset
    [3 * 1024 * 1024 + 7, text(200 * 1024, seed + 1)],
    [size - 5000, noise(5000, seed + 2)], // the short last chunk
  ]);
}

export async function backupImage(
  repo: Repository,
  image: string,
  name: string,
  incremental?: { base: string; extents: Extent[] },
): Promise<Manifest> {
  const src = await RawImageSource.open(image);
  let session: Awaited<ReturnType<Repository['beginBackup']>> | undefined;
  try {
    session = await repo.beginBackup({ name });
    await session.backupDisk(src, {
      disk: 0,
      base: incremental ? { pointId: incremental.base, disk: 0 } : undefined,
      changedExtents: incremental?.extents,
    });
    return await session.commit({ consistency: 'image' });
  } catch (err) {
    // As the CLI and the backup job do: a failed backup is aborted, which closes its index files.
    await session?.abort().catch(() => undefined);
    throw err;
  } finally {
    await src.close();
  }
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function cli(
  args: string[],
  env: Record<string, string | undefined> = { VBPROXY_REPO_PASSPHRASE: PASSPHRASE },
): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    encoding: 'utf8',
    env: { ...process.env, VBPROXY_REPO_PASSPHRASE: undefined, VBPROXY_LOG_LEVEL: 'silent', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function cliAsync(
  args: string[],
  env: Record<string, string | undefined> = { VBPROXY_REPO_PASSPHRASE: PASSPHRASE },
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      env: { ...process.env, VBPROXY_LOG_LEVEL: 'silent', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Byte-for-byte comparison of two files (Buffer.equals: fast on large images). */
export async function assertSameFile(actual: string, expected: string, message?: string): Promise<void> {
  const { readFile: rf } = await import('node:fs/promises');
  const [a, b] = await Promise.all([rf(actual), rf(expected)]);
  if (a.length !== b.length || !a.equals(b)) {
    let i = 0;
    while (i < Math.min(a.length, b.length) && a[i] === b[i]) i++;
    throw new Error(
      `${message ?? actual}: differs from ${expected} at byte ${i} (sizes ${a.length} and ${b.length})`,
    );
  }
}
