import type { VimClient } from './client.js';
import { CbtCoverageError, VimProtocolError } from './errors.js';
import { isVimObject, longToNumber, type MoRef, type VimLong, type VimObject } from './wire/values.js';

export interface ChangedArea {
  readonly start: number;
  readonly length: number;
}

export interface ChangedAreasQuery {
  readonly vm: MoRef;
  readonly snapshot: MoRef;
  readonly deviceKey: number;
  /** The snapshot disk's capacity in bytes. */
  readonly capacityBytes: number;
  /** The previous changeId, or `*` for the allocated areas (a full backup). */
  readonly changeId: string;
}

/** The changeId's CBT identity (the part before `/`): a different one means CBT was reset. */
export function changeIdUuid(changeId: string): string {
  const i = changeId.lastIndexOf('/');
  return i < 0 ? changeId : changeId.slice(0, i);
}

/**
 * Loops QueryChangedDiskAreas from offset 0 until the whole capacity is covered, checking that
 * every reply starts where it was asked to and that the reply windows add up to the capacity
 * exactly. Returns the changed (or, for `*`, allocated) areas, sorted and within the disk.
 * An unknown or reset changeId comes back as FileFaultError: the caller then does a full.
 */
export async function queryChangedAreas(client: VimClient, q: ChangedAreasQuery): Promise<ChangedArea[]> {
  const areas: ChangedArea[] = [];
  let offset = 0;
  let covered = 0;
  const where = `disk ${q.deviceKey} of ${q.vm.value} (snapshot ${q.snapshot.value})`;
  while (offset < q.capacityBytes) {
    const r = await client.call('QueryChangedDiskAreas', {
      _this: q.vm,
      snapshot: q.snapshot,
      deviceKey: q.deviceKey,
      startOffset: offset,
      changeId: q.changeId,
    });
    if (!isVimObject(r)) throw new VimProtocolError(`QueryChangedDiskAreas returned nothing for ${where}`);
    const start = longToNumber(r.startOffset as VimLong, 'startOffset');
    const length = longToNumber(r.length as VimLong, 'length');
    if (start !== offset) {
      throw new CbtCoverageError(
        `QueryChangedDiskAreas for ${where} answered from offset ${start}, asked ${offset}`,
      );
    }
    if (length <= 0)
      throw new CbtCoverageError(`QueryChangedDiskAreas for ${where} made no progress at offset ${offset}`);
    for (const a of (r.changedArea as VimObject[] | undefined) ?? []) {
      const s = longToNumber(a.start as VimLong, 'changedArea.start');
      const l = longToNumber(a.length as VimLong, 'changedArea.length');
      if (l <= 0) continue;
      if (s < start || s + l > start + length) {
        throw new CbtCoverageError(
          `QueryChangedDiskAreas for ${where} returned area ${s}+${l} outside its window ${start}+${length}`,
        );
      }
      areas.push({ start: s, length: l });
    }
    covered += length;
    offset = start + length;
  }
  if (covered !== q.capacityBytes) {
    throw new CbtCoverageError(
      `QueryChangedDiskAreas for ${where} covered ${covered} bytes of a ${q.capacityBytes}-byte disk`,
    );
  }
  areas.sort((a, b) => a.start - b.start);
  return areas;
}
