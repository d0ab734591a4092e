import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import { unionRanges } from './vmdk.js';

/**
 * The CBT change journal (`-ctk.vmdk`), docs/lab.md section 3: a `uuid` line, `epoch <n>` lines
 * appended at each snapshot, and `w <offset> <length>` lines appended after every write.
 */

export interface Journal {
  readonly uuid: string;
  /** Epoch numbers in file order. */
  readonly epochs: readonly number[];
  /** Entries in file order: an epoch marker or a write. */
  readonly entries: ReadonlyArray<{ readonly epoch: number } | { readonly w: readonly [number, number] }>;
}

export function newCbtUuid(): string {
  const h = [...randomBytes(16)].map((b) => b.toString(16).padStart(2, '0'));
  return `${h.slice(0, 8).join(' ')}-${h.slice(8).join(' ')}`;
}

/** Creates (or, for a reset, rewrites) the journal with a fresh uuid and `epoch 1`. */
export function resetJournal(path: string): string {
  const uuid = newCbtUuid();
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, `uuid ${uuid}\nepoch 1\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return uuid;
}

const cache = new Map<string, { size: number; mtimeMs: number; ino: number; journal: Journal }>();

/** Reads a journal; re-parsed only when the file changed (appends change its size). */
export function readJournal(path: string): Journal {
  const st = statSync(path);
  const hit = cache.get(path);
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino) return hit.journal;
  const journal = parseJournal(path);
  if (cache.size > 10_000) cache.clear();
  cache.set(path, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, journal });
  return journal;
}

function parseJournal(path: string): Journal {
  const entries: ({ epoch: number } | { w: [number, number] })[] = [];
  const epochs: number[] = [];
  let uuid = '';
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.startsWith('uuid ')) uuid = line.slice(5).trim();
    else if (line.startsWith('epoch ')) {
      const n = Number(line.slice(6));
      epochs.push(n);
      entries.push({ epoch: n });
    } else if (line.startsWith('w ')) {
      const [, o, l] = line.split(' ');
      entries.push({ w: [Number(o), Number(l)] });
    }
  }
  return { uuid, epochs, entries };
}

/** Appends `epoch <n+1>` and returns the new epoch number. */
export function appendEpoch(path: string): number {
  const j = readJournal(path);
  const next = (j.epochs[j.epochs.length - 1] ?? 0) + 1;
  appendFileSync(path, `epoch ${next}\n`);
  return next;
}

/** Appends a `w` line (one write() per line, O_APPEND). */
export function appendWrite(path: string, offset: number, length: number): void {
  if (length <= 0 || !existsSync(path)) return;
  appendFileSync(path, `w ${offset} ${length}\n`);
}

export class UnknownChangeIdError extends Error {}

/**
 * The union of the `w` lines between `epoch from` and `epoch to` (docs/lab.md section 3), as
 * sorted disjoint [start, end) ranges. Throws UnknownChangeIdError for a wrong uuid or epoch.
 */
export function changesBetween(j: Journal, uuid: string, from: number, to: number): [number, number][] {
  if (uuid !== j.uuid)
    throw new UnknownChangeIdError(`changeId uuid ${uuid} is not the disk's CBT uuid (CBT was reset?)`);
  if (!j.epochs.includes(from)) throw new UnknownChangeIdError(`epoch ${from} is not in the change journal`);
  if (!j.epochs.includes(to) || from > to)
    throw new UnknownChangeIdError(`epoch ${to} does not follow epoch ${from}`);
  if (from === to) return [];
  const ranges: [number, number][] = [];
  let inside = false;
  for (const e of j.entries) {
    if ('epoch' in e) {
      if (e.epoch === from) inside = true;
      else if (e.epoch === to) break;
    } else if (inside) {
      ranges.push([e.w[0], e.w[0] + e.w[1]]);
    }
  }
  return unionRanges(ranges);
}
