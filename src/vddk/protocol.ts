/**
 * Messages between the event loop (src/vddk/vddk.ts) and the worker thread that owns the library
 * (src/vddk/worker.ts). Ids of connections and disks are numbers the worker hands out; raw
 * pointers never leave the worker.
 */
import type { ConnectParamsFields } from './connect-params.js';
import type { VixFailure } from './errors.js';

export interface WorkerStart {
  readonly libraryPath: string;
  readonly libDir: string;
  readonly configFile: string | null;
  /** The event loop's registered VixDiskLibCompletionCB (koffi.register), for ReadAsync/WriteAsync. */
  readonly completionCallback: bigint;
}

export interface LibraryIdentity {
  readonly libraryPath: string;
  /** The version in the library's file name (libvixDiskLib.so.8.0.3 -> 8.0.3), or the soname's major. */
  readonly version: string;
  /** VixDiskLib_ListTransportModes. */
  readonly transports: readonly string[];
  /** The lab library's own description (VixDiskLibLab_Identify), absent for VMware's VDDK. */
  readonly labIdentity: string | null;
}

export interface DiskInfo {
  readonly capacitySectors: number;
  readonly numLinks: number;
  readonly adapterType: number;
  readonly uuid: string | null;
  readonly parentFileNameHint: string | null;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly geometry: { readonly cylinders: number; readonly heads: number; readonly sectors: number };
}

export type Request =
  | {
      op: 'connect';
      fields: ConnectParamsFields | null;
      readOnly: boolean;
      snapshotRef: string | null;
      transports: string | null;
      label: string;
    }
  | { op: 'disconnect'; conn: number }
  | { op: 'open'; conn: number; path: string; flags: number }
  | { op: 'close'; disk: number }
  | { op: 'info'; disk: number }
  | { op: 'metadata'; disk: number }
  | { op: 'allocated'; disk: number; startSector: number; numSectors: number; chunkSectors: number }
  /** `address`: the buffer's memory in this process, kept alive by the event loop until the reply. */
  | {
      op: 'read' | 'write' | 'readSync' | 'writeSync';
      disk: number;
      sector: number;
      count: number;
      address: bigint;
    }
  | { op: 'flush'; disk: number }
  | { op: 'cleanup'; fields: ConnectParamsFields | null }
  | { op: 'prepareForAccess' | 'endAccess'; fields: ConnectParamsFields; identity: string }
  | { op: 'errorText'; code: number }
  /** The VixFailure (with VDDK's text) of an asynchronous completion's result. */
  | { op: 'failure'; operation: string; code: number | bigint; object: string }
  | { op: 'exit' };

export type RequestMessage = Request & { readonly id: number };

export type OpenResult = { disk: number; transport: string; info: DiskInfo };

export type WorkerMessage =
  | { type: 'ready'; identity: LibraryIdentity }
  | { type: 'startFailed'; message: string; code: string }
  | { type: 'reply'; id: number; result?: unknown; failure?: VixFailure; message?: string }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string };

/** What the worker posts: its messages of one turn of its event loop, in order. */
export type WorkerBatch = readonly WorkerMessage[];
