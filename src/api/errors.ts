import { VbproxyError } from '../errors.js';

/** An API failure with its HTTP status. Handlers throw these; the error middleware renders them. */
export class ApiError extends VbproxyError {
  readonly status: number;
  readonly issues: { path: string; message: string }[] | undefined;

  constructor(
    status: number,
    code: string,
    message: string,
    options: { cause?: unknown; issues?: { path: string; message: string }[] } = {},
  ) {
    super(code, message, options.cause === undefined ? {} : { cause: options.cause });
    this.status = status;
    this.issues = options.issues;
  }
}
