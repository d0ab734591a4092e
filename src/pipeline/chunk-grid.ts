import type { Extent } from './disk.js';

/**
 * The chunk numbers that `extents` touch on a grid of `chunkSize`, in increasing order, each once,
 * starting at chunk `from`. The extents must be sorted by offset (overlaps are tolerated).
 */
export function* touchedChunks(extents: readonly Extent[], chunkSize: number, from = 0): Generator<number> {
  let next = from;
  for (const e of extents) {
    if (e.length <= 0) continue;
    const first = Math.max(Math.floor(e.offset / chunkSize), next);
    const last = Math.floor((e.offset + e.length - 1) / chunkSize);
    for (let n = first; n <= last; n++) yield n;
    if (last + 1 > next) next = last + 1;
  }
}

/** Sorts, validates and merges extents against a capacity; throws on an extent outside it. */
export function normaliseExtents(extents: readonly Extent[], capacity: number, what: string): Extent[] {
  const sorted = [...extents].sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.offset < 0 || e.length < 0) {
      throw new RangeError(`${what}: extent ${JSON.stringify(e)} is not a pair of non-negative integers`);
    }
    if (e.offset + e.length > capacity) {
      throw new RangeError(
        `${what}: extent at ${e.offset} (+${e.length}) ends beyond the disk capacity ${capacity}`,
      );
    }
    if (e.length === 0) continue;
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      const end = Math.max(last.offset + last.length, e.offset + e.length);
      out[out.length - 1] = { offset: last.offset, length: end - last.offset };
    } else out.push({ offset: e.offset, length: e.length });
  }
  return out;
}
