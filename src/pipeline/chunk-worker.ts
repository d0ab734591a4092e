/**
 * Worker thread of the chunk pool: hashing, compression, encryption and their reverse run here so
 * that both cores work and the event loop stays free. Buffers arrive and leave by transfer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ChunkCodec } from '../repository/chunk-codec.js';
import { CorruptObjectError } from '../repository/errors.js';
import type { WorkerRequest, WorkerResponse, WorkerInit } from './worker-pool.js';

const init = workerData as WorkerInit;
const codec = new ChunkCodec({ chunkId: init.chunkId, chunkEnc: init.chunkEnc }, init.chunkSize);
const port = parentPort;
if (!port) throw new Error('chunk-worker must run in a worker thread');

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

port.on('message', (req: WorkerRequest) => {
  let res: WorkerResponse;
  const transfer: ArrayBuffer[] = [];
  try {
    switch (req.op) {
      case 'hash': {
        const id = codec.id(req.data);
        res = { seq: req.seq, ok: true, id, data: req.data };
        transfer.push(req.data.buffer as ArrayBuffer);
        break;
      }
      case 'seal': {
        const sealed = codec.seal(req.id, req.data);
        res = { seq: req.seq, ok: true, id: null, data: sealed };
        transfer.push(sealed.buffer as ArrayBuffer);
        break;
      }
      case 'open': {
        const plain = codec.open(req.id, asBuffer(req.data), req.expectedLength);
        res = { seq: req.seq, ok: true, id: null, data: plain };
        transfer.push(plain.buffer as ArrayBuffer);
        break;
      }
    }
  } catch (err) {
    const corrupt = err instanceof CorruptObjectError;
    res = {
      seq: req.seq,
      ok: false,
      corrupt,
      message: corrupt
        ? err.message.replace(/^damaged chunk [0-9a-f]+: /, '')
        : String((err as Error).message ?? err),
    };
  }
  port.postMessage(res, transfer);
});
