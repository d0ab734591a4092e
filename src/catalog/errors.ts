import { VbproxyError } from '../errors.js';

/** A catalog operation that failed: the database is unreachable, a row is missing, a rule is broken. */
export class CatalogError extends VbproxyError {}

/** The object asked for does not exist (the API answers 404). */
export class NotFoundError extends CatalogError {
  constructor(kind: string, id: string) {
    super('CATALOG_NOT_FOUND', `no ${kind} with id ${id}`);
  }
}

/** The change conflicts with other rows (a duplicate name, an object still in use): API 409. */
export class ConflictError extends CatalogError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CATALOG_CONFLICT', message, options);
  }
}
