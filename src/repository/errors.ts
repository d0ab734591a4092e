import { VbproxyError } from '../errors.js';

/**
 * Errors of the backup repository. Every one names the object it is about (the repository
 * directory, a restore point, a disk index, a chunk id) and says what to do.
 */
export class RepositoryError extends VbproxyError {}

/** No repository at the given location (no `config` object). */
export class RepositoryNotFoundError extends RepositoryError {
  constructor(location: string, cause?: unknown) {
    super(
      'REPO_NOT_FOUND',
      `no vbproxy repository at ${location} (no config file); create one with "vbproxy repo init --repo ${location}"`,
      { cause },
    );
  }
}

/** `init` on a location that already holds a repository or other files. */
export class RepositoryExistsError extends RepositoryError {
  constructor(location: string) {
    super(
      'REPO_EXISTS',
      `${location} is not empty: a repository can only be created in an empty or new directory`,
    );
  }
}

/** The repository was written by a newer vbproxy (format version above what this build reads). */
export class RepositoryVersionError extends RepositoryError {
  constructor(location: string, found: number, supported: number) {
    super(
      'REPO_FORMAT_TOO_NEW',
      `repository ${location} has format version ${found}, this vbproxy reads up to version ${supported}: upgrade vbproxy to use it`,
    );
  }
}

/** The passphrase does not unlock the repository's key. */
export class WrongPassphraseError extends RepositoryError {
  constructor(location: string) {
    super(
      'REPO_WRONG_PASSPHRASE',
      `wrong passphrase for repository ${location}: the key file could not be unlocked with it`,
    );
  }
}

/** What kind of repository object an error is about. */
export type ObjectKind = 'config' | 'key' | 'manifest' | 'index' | 'chunk' | 'session' | 'lock';

/** An object failed authentication, is truncated or is malformed. */
export class CorruptObjectError extends RepositoryError {
  readonly kind: ObjectKind;
  readonly object: string;
  constructor(kind: ObjectKind, object: string, detail: string, cause?: unknown) {
    super('REPO_CORRUPT', `damaged ${kind} ${object}: ${detail}`, { cause });
    this.kind = kind;
    this.object = object;
  }
}

/** An object that a restore point references is not in the repository. */
export class MissingObjectError extends RepositoryError {
  readonly kind: ObjectKind;
  readonly object: string;
  constructor(kind: ObjectKind, object: string, detail: string, cause?: unknown) {
    super('REPO_MISSING', `missing ${kind} ${object}: ${detail}`, { cause });
    this.kind = kind;
    this.object = object;
  }
}

/** No restore point with that id (or no such disk in it). */
export class PointNotFoundError extends RepositoryError {
  constructor(location: string, what: string) {
    super(
      'REPO_POINT_NOT_FOUND',
      `${what} not found in repository ${location}; "vbproxy repo list" shows the points`,
    );
  }
}

/** The file system under the repository is full. */
export class NoSpaceError extends RepositoryError {
  constructor(path: string, cause?: unknown) {
    super(
      'REPO_NO_SPACE',
      `no space left on the device holding ${path}: free space (prune + gc) or move the repository; nothing was committed`,
      { cause },
    );
  }
}

/** Another process holds a lock this operation needs. Worth retrying later. */
export class RepositoryBusyError extends RepositoryError {
  constructor(message: string) {
    super('REPO_BUSY', message, { transient: true });
  }
}

/** A backup session cannot commit (it was aborted, failed, or lost its protection). */
export class SessionError extends RepositoryError {
  constructor(message: string, cause?: unknown) {
    super('REPO_SESSION', message, { cause });
  }
}

/** The operation was aborted through its AbortSignal. Nothing was committed. */
export class OperationAbortedError extends RepositoryError {
  constructor(what: string, cause?: unknown) {
    super('REPO_ABORTED', `${what} was aborted; nothing was committed`, { cause, transient: true });
  }
}

/** A caller passed something the repository cannot work with (bad range, wrong base disk, ...). */
export class InvalidRequestError extends RepositoryError {
  constructor(message: string) {
    super('REPO_INVALID_REQUEST', message);
  }
}
