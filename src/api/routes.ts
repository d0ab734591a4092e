import { cpus, totalmem } from 'node:os';
import type { z } from 'zod';
import { getJob, listJobEvents, listJobs } from '../catalog/jobs.js';
import { getPolicy, listPolicies, type PolicyFields } from '../catalog/policies.js';
import { getRestorePoint, listRestorePoints } from '../catalog/restore-points.js';
import {
  deleteVcenter,
  getVcenter,
  getVcenterCredentials,
  insertVcenter,
  listVcenters,
  type Vcenter,
} from '../catalog/vcenters.js';
import { describeError } from '../errors.js';
import { QUEUE_NAMES, type MaintenanceOperation } from '../jobs/queues.js';
import {
  cancelJob,
  createPolicy,
  liveJobState,
  removePolicy,
  replacePolicy,
  runPolicy,
  startMaintenance,
  startRestore,
} from './operations.js';
import { ApiError } from './errors.js';
import { checkHealth, repositoryStatus } from './health.js';
import { route, type RouteDef } from './route.js';
import * as s from './schemas.js';
import type { ApiDeps } from './deps.js';

/** Dates become ISO strings, as JSON.stringify would do; done here so responses match their schemas. */
function plain<T>(value: T): unknown {
  return JSON.parse(JSON.stringify(value));
}

function vcenterOut(v: Vcenter): unknown {
  return plain(v);
}

function policyFields(b: z.output<typeof s.policyBody>, deps: ApiDeps): PolicyFields {
  return {
    name: b.name,
    vcenterId: b.vcenterId,
    vmSelection: b.vmSelection,
    diskSelection: b.diskSelection,
    consistency: b.consistency,
    consistencyFallback: b.consistencyFallback,
    transports: b.transports,
    schedule: b.schedule,
    retention: b.retention,
    repository: b.repository ?? deps.repositoryPath,
    enabled: b.enabled,
  };
}

async function maintenance(deps: ApiDeps, operation: MaintenanceOperation, readData?: boolean) {
  const jobId = await startMaintenance(deps, operation, readData);
  return { status: 202, json: { jobId, queue: QUEUE_NAMES.maintenance } };
}

const V1 = '/api/v1';
const E_READ = [400, 401, 403];
const E_ID = [400, 401, 403, 404];
const E_WRITE = [400, 401, 403, 413];

/** Every route of the API. The OpenAPI document and the Express router are both built from this list. */
export const routes: RouteDef[] = [
  route({
    method: 'get',
    path: '/healthz',
    summary: 'The process is up',
    tag: 'health',
    scope: null,
    status: 200,
    response: s.healthz,
    errors: [],
    handler: async () => ({ json: { status: 'ok' } }),
  }),
  route({
    method: 'get',
    path: '/readyz',
    summary: 'PostgreSQL, Redis and the datastore are reachable (503 when one is not)',
    tag: 'health',
    scope: null,
    status: 200,
    response: s.readyz,
    errors: [503],
    handler: async ({ deps }) => {
      const checks = await checkHealth(deps);
      const ready = checks.database.ok && checks.redis.ok && checks.datastore.ok;
      return { status: ready ? 200 : 503, json: { ready, checks } };
    },
  }),
  route({
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus metrics (text exposition format)',
    tag: 'health',
    scope: null,
    status: 200,
    errors: [],
    handler: async ({ deps }) => ({ text: await deps.metrics.text(), contentType: deps.metrics.contentType }),
  }),
  route({
    method: 'get',
    path: `${V1}/proxy`,
    summary: 'This proxy: identity, version, capacity, registration and health',
    tag: 'proxy',
    scope: 'read',
    status: 200,
    response: s.proxyResponse,
    errors: E_READ,
    handler: async ({ deps }) => ({
      json: {
        name: deps.proxy.name,
        version: deps.proxy.version,
        vmMoref: deps.proxy.vmMoref,
        biosUuid: deps.proxy.biosUuid,
        capacity: {
          diskConcurrency: deps.proxy.diskConcurrency,
          cpus: cpus().length,
          memoryBytes: totalmem(),
        },
        registration: deps.registration?.() ?? { state: 'not-configured', proxyId: null },
        health: await checkHealth(deps),
      },
    }),
  }),

  // ---- vCenters
  route({
    method: 'get',
    path: `${V1}/vcenters`,
    summary: 'List vCenters (passwords are never returned)',
    tag: 'vcenters',
    scope: 'read',
    status: 200,
    response: s.vcenterList,
    errors: E_READ,
    handler: async ({ deps }) => ({ json: { items: (await listVcenters(deps.pool)).map(vcenterOut) } }),
  }),
  route({
    method: 'post',
    path: `${V1}/vcenters`,
    summary: 'Add a vCenter after a successful connection test; 422 when the test fails',
    tag: 'vcenters',
    scope: 'admin',
    body: s.vcenterBody,
    status: 201,
    response: s.vcenterResponse,
    errors: [...E_WRITE, 409, 422],
    handler: async ({ deps, body }) => {
      try {
        await deps.tester.test({
          url: body.url,
          username: body.username,
          password: body.password,
          thumbprint: body.thumbprint ?? null,
        });
      } catch (err) {
        throw new ApiError(
          422,
          'VCENTER_CONNECTION_FAILED',
          `connection test failed: ${describeError(err)}`,
          {
            cause: err,
          },
        );
      }
      const v = await insertVcenter(deps.pool, deps.secretBox, body);
      deps.logger.info({ vcenter: v.name, url: v.url }, 'vCenter added');
      return { status: 201, json: vcenterOut(v) };
    },
  }),
  route({
    method: 'get',
    path: `${V1}/vcenters/:id`,
    summary: 'Get a vCenter',
    tag: 'vcenters',
    scope: 'read',
    params: s.idParams,
    status: 200,
    response: s.vcenterResponse,
    errors: E_ID,
    handler: async ({ deps, params }) => ({ json: vcenterOut(await getVcenter(deps.pool, params.id)) }),
  }),
  route({
    method: 'delete',
    path: `${V1}/vcenters/:id`,
    summary: 'Remove a vCenter (409 while a policy uses it)',
    tag: 'vcenters',
    scope: 'admin',
    params: s.idParams,
    status: 204,
    errors: [...E_ID, 409],
    handler: async ({ deps, params }) => {
      await deleteVcenter(deps.pool, params.id);
      return { status: 204, json: null };
    },
  }),
  route({
    method: 'post',
    path: `${V1}/vcenters/:id/test`,
    summary: 'Test the stored connection to a vCenter; 422 when it fails',
    tag: 'vcenters',
    scope: 'operate',
    params: s.idParams,
    status: 200,
    response: s.connectionTestResponse,
    errors: [...E_ID, 422],
    handler: async ({ deps, params }) => {
      const c = await getVcenterCredentials(deps.pool, deps.secretBox, params.id);
      try {
        const r = await deps.tester.test(c);
        return { json: { ok: true, message: r.message } };
      } catch (err) {
        throw new ApiError(
          422,
          'VCENTER_CONNECTION_FAILED',
          `connection test failed: ${describeError(err)}`,
          {
            cause: err,
          },
        );
      }
    },
  }),

  // ---- policies
  route({
    method: 'get',
    path: `${V1}/policies`,
    summary: 'List policies',
    tag: 'policies',
    scope: 'read',
    status: 200,
    response: s.policyList,
    errors: E_READ,
    handler: async ({ deps }) => ({ json: { items: plain(await listPolicies(deps.pool)) } }),
  }),
  route({
    method: 'post',
    path: `${V1}/policies`,
    summary: 'Create a policy',
    tag: 'policies',
    scope: 'admin',
    body: s.policyBody,
    status: 201,
    response: s.policyResponse,
    errors: [...E_WRITE, 404, 409],
    handler: async ({ deps, body }) => ({
      status: 201,
      json: plain(await createPolicy(deps, policyFields(body, deps))),
    }),
  }),
  route({
    method: 'get',
    path: `${V1}/policies/:id`,
    summary: 'Get a policy',
    tag: 'policies',
    scope: 'read',
    params: s.idParams,
    status: 200,
    response: s.policyResponse,
    errors: E_ID,
    handler: async ({ deps, params }) => ({ json: plain(await getPolicy(deps.pool, params.id)) }),
  }),
  route({
    method: 'put',
    path: `${V1}/policies/:id`,
    summary: 'Replace a policy',
    tag: 'policies',
    scope: 'admin',
    params: s.idParams,
    body: s.policyBody,
    status: 200,
    response: s.policyResponse,
    errors: [...E_WRITE, 404, 409],
    handler: async ({ deps, params, body }) => ({
      json: plain(await replacePolicy(deps, params.id, policyFields(body, deps))),
    }),
  }),
  route({
    method: 'delete',
    path: `${V1}/policies/:id`,
    summary: 'Delete a policy (its restore points stay)',
    tag: 'policies',
    scope: 'admin',
    params: s.idParams,
    status: 204,
    errors: E_ID,
    handler: async ({ deps, params }) => {
      await removePolicy(deps, params.id);
      return { status: 204, json: null };
    },
  }),
  route({
    method: 'post',
    path: `${V1}/policies/:id/run`,
    summary:
      'Run a policy now: queue one backup per VM (a VM already queued or running is reported, not queued twice)',
    tag: 'policies',
    scope: 'operate',
    params: s.idParams,
    body: s.policyRunBody,
    status: 202,
    response: s.policyRunResponse,
    errors: [...E_WRITE, 404, 422],
    handler: async ({ deps, params, body }) => {
      const policy = await getPolicy(deps.pool, params.id);
      return { status: 202, json: await runPolicy(deps, policy, body.vmMorefs) };
    },
  }),

  // ---- jobs
  route({
    method: 'get',
    path: `${V1}/jobs`,
    summary: 'List jobs, newest first, with filters',
    tag: 'jobs',
    scope: 'read',
    query: s.jobQuery,
    status: 200,
    response: s.jobList,
    errors: E_READ,
    handler: async ({ deps, query }) => ({
      json: {
        items: plain(
          await listJobs(deps.pool, {
            type: query.type,
            state: query.state,
            policyId: query.policyId,
            vmMoref: query.vm,
            since: query.since === undefined ? undefined : new Date(query.since),
            until: query.until === undefined ? undefined : new Date(query.until),
            limit: query.limit,
          }),
        ),
      },
    }),
  }),
  route({
    method: 'get',
    path: `${V1}/jobs/:id`,
    summary: 'Get a job with its progress, queue state and events',
    tag: 'jobs',
    scope: 'read',
    params: s.idParams,
    status: 200,
    response: s.jobDetail,
    errors: E_ID,
    handler: async ({ deps, params }) => {
      const job = await getJob(deps.pool, params.id);
      const events = await listJobEvents(deps.pool, job.id);
      const { queueState, progress } = await liveJobState(deps.queues, job);
      return {
        json: plain({ ...job, progress, queueState, events: events.map(({ jobId: _jobId, ...e }) => e) }),
      };
    },
  }),
  route({
    method: 'post',
    path: `${V1}/jobs/:id/cancel`,
    summary:
      'Cancel a job: a queued job is removed at once; a running job is stopped (and cleaned up) by its worker',
    tag: 'jobs',
    scope: 'operate',
    params: s.idParams,
    status: 202,
    response: s.jobResponse,
    errors: [...E_ID, 409],
    handler: async ({ deps, params }) => {
      return { status: 202, json: plain(await cancelJob(deps, params.id)) };
    },
  }),

  // ---- restore points and restores
  route({
    method: 'get',
    path: `${V1}/restore-points`,
    summary: 'List restore points, newest first, by VM and time',
    tag: 'restore-points',
    scope: 'read',
    query: s.restorePointQuery,
    status: 200,
    response: s.restorePointList,
    errors: E_READ,
    handler: async ({ deps, query }) => ({
      json: {
        items: plain(
          await listRestorePoints(deps.pool, {
            vmMoref: query.vm,
            vcenterId: query.vcenterId,
            from: query.from === undefined ? undefined : new Date(query.from),
            to: query.to === undefined ? undefined : new Date(query.to),
            limit: query.limit,
          }),
        ),
      },
    }),
  }),
  route({
    method: 'get',
    path: `${V1}/restore-points/:id`,
    summary: 'Get a restore point and its disks',
    tag: 'restore-points',
    scope: 'read',
    params: s.idParams,
    status: 200,
    response: s.restorePointDetail,
    errors: E_ID,
    handler: async ({ deps, params }) => ({ json: plain(await getRestorePoint(deps.pool, params.id)) }),
  }),
  route({
    method: 'post',
    path: `${V1}/restores`,
    summary: 'Start a restore of a restore point to raw image files, an existing VM, or a new VM',
    tag: 'restores',
    scope: 'operate',
    body: s.restoreBody,
    status: 202,
    response: s.jobAccepted,
    errors: [...E_WRITE, 404],
    handler: async ({ deps, body }) => {
      const jobId = await startRestore(deps, body.restorePointId, body.target);
      return { status: 202, json: { jobId, queue: QUEUE_NAMES.restore } };
    },
  }),

  // ---- repository
  route({
    method: 'get',
    path: `${V1}/repository`,
    summary: 'Repository status: reachable, space, restore point counts',
    tag: 'repository',
    scope: 'read',
    status: 200,
    response: s.repositoryStatus,
    errors: E_READ,
    handler: async ({ deps }) => ({ json: await repositoryStatus(deps) }),
  }),
  route({
    method: 'post',
    path: `${V1}/repository/verify`,
    summary: 'Start a repository verification (readData re-reads every chunk)',
    tag: 'repository',
    scope: 'operate',
    body: s.verifyBody,
    status: 202,
    response: s.jobAccepted,
    errors: E_WRITE,
    handler: async ({ deps, body }) => maintenance(deps, 'verify', body.readData),
  }),
  route({
    method: 'post',
    path: `${V1}/repository/prune`,
    summary: "Start a prune (apply the policies' retention)",
    tag: 'repository',
    scope: 'operate',
    body: s.emptyBody,
    status: 202,
    response: s.jobAccepted,
    errors: E_WRITE,
    handler: async ({ deps }) => maintenance(deps, 'prune'),
  }),
  route({
    method: 'post',
    path: `${V1}/repository/gc`,
    summary: 'Start a garbage collection of unreferenced chunks',
    tag: 'repository',
    scope: 'operate',
    body: s.emptyBody,
    status: 202,
    response: s.jobAccepted,
    errors: E_WRITE,
    handler: async ({ deps }) => maintenance(deps, 'gc'),
  }),
];
