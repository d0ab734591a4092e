import { z } from 'zod';
import { openBlob, sealBlob } from './chunk-codec.js';
import { MANIFEST_MAGIC } from './format.js';
import { CorruptObjectError } from './errors.js';

/** Counters of one disk's backup (all byte counts are plaintext bytes unless named stored). */
export const diskStatsSchema = z.object({
  /** Bytes read from the source. */
  readBytes: z.number(),
  /** Chunks in the disk's index, and how they were obtained. */
  chunks: z.number(),
  zeroChunks: z.number(),
  /** Chunks taken from the base point's index without reading. */
  reusedChunks: z.number(),
  /** Chunks read whose content was already stored. */
  dedupChunks: z.number(),
  /** Chunks written, their plaintext size and their size as stored. */
  newChunks: z.number(),
  newBytes: z.number(),
  storedBytes: z.number(),
  durationMs: z.number(),
});
export type DiskStats = z.infer<typeof diskStatsSchema>;

export const manifestDiskSchema = z.object({
  /** The disk's number in the point (0, 1, ...; the VM's disk order). */
  disk: z.number().int().nonnegative(),
  capacity: z.number().int().nonnegative(),
  chunkSize: z.number().int().positive(),
  mode: z.enum(['full', 'incremental']),
  /** The point whose index an incremental started from. */
  basePoint: z.string().nullable(),
  /** The CBT changeId of the snapshot this disk was read from (null for image files). */
  changeId: z.string().nullable(),
  /** A caller label such as the VMDK path or the image file. */
  label: z.string(),
  stats: diskStatsSchema,
});
export type ManifestDisk = z.infer<typeof manifestDiskSchema>;

export const manifestSchema = z.object({
  version: z.literal(1),
  id: z.string(),
  /** What was backed up (VM name, image name); prune groups points by it. */
  name: z.string(),
  startedAt: z.string(),
  createdAt: z.string(),
  /** application | filesystem | crash | image: what the snapshot actually achieved. */
  consistency: z.string(),
  /** The caller's VM configuration blob (e.g. the .vmx / config spec), base64; null if none. */
  vmConfig: z.string().nullable(),
  disks: z.array(manifestDiskSchema),
  /** Free-form labels given by the caller (job id, policy, ...). */
  tags: z.record(z.string(), z.string()),
});
export type Manifest = z.infer<typeof manifestSchema>;

export function encodeManifest(key: Uint8Array, m: Manifest): Buffer {
  const ad = Buffer.concat([MANIFEST_MAGIC, Buffer.from(m.id, 'latin1')]);
  return Buffer.concat([MANIFEST_MAGIC, sealBlob(key, ad, Buffer.from(JSON.stringify(m), 'utf8'))]);
}

export function decodeManifest(key: Uint8Array, pointId: string, data: Buffer): Manifest {
  if (
    data.length < MANIFEST_MAGIC.length ||
    !data.subarray(0, MANIFEST_MAGIC.length).equals(MANIFEST_MAGIC)
  ) {
    throw new CorruptObjectError('manifest', pointId, 'bad magic (not a manifest, or a newer format)');
  }
  const ad = Buffer.concat([MANIFEST_MAGIC, Buffer.from(pointId, 'latin1')]);
  const plain = openBlob(key, ad, data.subarray(MANIFEST_MAGIC.length));
  if (!plain)
    throw new CorruptObjectError('manifest', pointId, 'authentication failed (modified or truncated)');
  const parsed = manifestSchema.safeParse(JSON.parse(plain.toString('utf8')));
  if (!parsed.success || parsed.data.id !== pointId) {
    throw new CorruptObjectError('manifest', pointId, 'content is not a valid manifest for this point');
  }
  return parsed.data;
}
