import { VbproxyError } from '../errors.js';

/** The manager could not be reached or answered with a server error: retried with backoff. */
export class ManagerUnreachableError extends VbproxyError {
  constructor(url: string, why: string, cause?: unknown) {
    super('MANAGER_UNREACHABLE', `cannot reach the manager at ${url}: ${why}`, { cause, transient: true });
  }
}

/** The manager refused the request (invalid token, revoked proxy, bad request). */
export class ManagerRejectedError extends VbproxyError {
  readonly managerCode: string;
  readonly status: number;
  constructor(status: number, managerCode: string, message: string) {
    super(`MANAGER_${managerCode.toUpperCase()}`, message);
    this.managerCode = managerCode;
    this.status = status;
  }
}
