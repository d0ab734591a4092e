export { Vddk, VddkConnection, VddkDisk, OpenFlags, SECTOR_SIZE } from './vddk.js';
export type { VddkStartOptions, CleanupResult, OpenOptions } from './vddk.js';
export { VddkDiskSource, VddkDiskTarget } from './disk-source.js';
export type { VddkDiskSourceOptions, VddkDiskTargetOptions } from './disk-source.js';
export {
  thumbprintFromPem,
  sessionCookie,
  vmxSpecFor,
  DEFAULT_TRANSPORT_ORDER,
  TRANSPORTS,
} from './connect-params.js';
export type { VddkConnectionSpec, VddkCredentials, Transport } from './connect-params.js';
export * from './errors.js';
export { locateLibrary, LAB_LIBDIR } from './library-path.js';
export type { DiskInfo, LibraryIdentity } from './protocol.js';
