import { VbproxyError } from '../errors.js';

/** Errors of disk sources and targets (image files now, VDDK handles later). */
export class DiskIoError extends VbproxyError {}

export class ImageNotFoundError extends DiskIoError {
  constructor(path: string, cause?: unknown) {
    super('IMAGE_NOT_FOUND', `image file ${path} does not exist (check the path given to --image)`, {
      cause,
    });
  }
}
