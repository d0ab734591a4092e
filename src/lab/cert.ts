import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VbproxyError } from '../errors.js';

export interface LabCertificate {
  readonly key: string;
  readonly cert: string;
  /** SHA-256 fingerprint `AA:BB:...` (what the vbproxy client pins). */
  readonly fingerprint256: string;
  /** SHA-1 thumbprint `AA:BB:...` (what VDDK's ConnectParams.thumbPrint takes). */
  readonly thumbprintSha1: string;
}

/**
 * The lab's self-signed certificate, made once with the openssl CLI (Debian package `openssl`)
 * and kept in `<root>/state/tls/` (the key mode 0600).
 */
export function labCertificate(root: string): LabCertificate {
  const dir = join(root, 'state', 'tls');
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  if (!existsSync(keyPath) || !existsSync(certPath)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-sha256',
          '-days',
          '3650',
          '-keyout',
          keyPath,
          '-out',
          certPath,
          '-subj',
          '/CN=vbproxy-lab',
          '-addext',
          'subjectAltName=DNS:localhost,IP:127.0.0.1',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
    } catch (err) {
      throw new VbproxyError(
        'LAB_TLS',
        `cannot create the lab certificate with openssl (is the openssl package installed?): ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
  const cert = readFileSync(certPath, 'utf8');
  const x = new X509Certificate(cert);
  return {
    key: readFileSync(keyPath, 'utf8'),
    cert,
    fingerprint256: x.fingerprint256,
    thumbprintSha1: x.fingerprint,
  };
}
