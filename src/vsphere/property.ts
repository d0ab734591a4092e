import type { VimClient } from './client.js';
import { localizedFaultToError, VimFaultError, VimProtocolError } from './errors.js';
import { isMoRef, isVimObject, type MoRef, type VimObject, type VimValue } from './wire/values.js';

/** One object's retrieved properties, plus the per-property faults of its missingSet. */
export interface ObjectProps {
  readonly obj: MoRef;
  readonly props: ReadonlyMap<string, VimValue>;
  readonly missing: readonly VimFaultError[];
}

export interface RetrieveOptions {
  /** Objects per page (RetrieveOptions.maxObjects); pages follow through ContinueRetrievePropertiesEx. */
  readonly pageSize?: number;
}

function toObjectProps(oc: VimObject): ObjectProps {
  const obj = oc.obj;
  if (!isMoRef(obj)) throw new VimProtocolError('ObjectContent without obj');
  const props = new Map<string, VimValue>();
  for (const dp of (oc.propSet as VimObject[] | undefined) ?? []) {
    if (typeof dp.name === 'string' && dp.val !== undefined) props.set(dp.name, dp.val);
  }
  const missing = ((oc.missingSet as VimObject[] | undefined) ?? []).map((mp) =>
    localizedFaultToError(mp.fault, {
      method: 'RetrievePropertiesEx',
      target: obj,
      propertyPath: typeof mp.path === 'string' ? mp.path : '?',
    }),
  );
  return { obj, props, missing };
}

/** Runs RetrievePropertiesEx with paging and returns every object. */
export async function retrieve(
  client: VimClient,
  specSet: VimObject[],
  opts: RetrieveOptions = {},
): Promise<ObjectProps[]> {
  const pc = client.serviceContent.propertyCollector;
  const out: ObjectProps[] = [];
  let res = await client.call('RetrievePropertiesEx', {
    _this: pc,
    specSet,
    options: { _type: 'RetrieveOptions', maxObjects: opts.pageSize ?? 500 },
  });
  while (res !== undefined) {
    if (!isVimObject(res)) throw new VimProtocolError('RetrievePropertiesEx returned no RetrieveResult');
    for (const oc of (res.objects as VimObject[] | undefined) ?? []) out.push(toObjectProps(oc));
    const token = res.token;
    if (typeof token !== 'string' || token === '') break;
    res = await client.call('ContinueRetrievePropertiesEx', { _this: pc, token });
  }
  return out;
}

/** Reads `paths` of one object. Per-property faults are thrown unless `tolerateMissing`. */
export async function retrieveOne(
  client: VimClient,
  obj: MoRef,
  paths: string[],
  tolerateMissing = false,
): Promise<ObjectProps> {
  const [result] = await retrieve(client, [
    {
      _type: 'PropertyFilterSpec',
      propSet: [{ _type: 'PropertySpec', type: obj.type, pathSet: paths }],
      objectSet: [{ _type: 'ObjectSpec', obj }],
    },
  ]);
  if (!result) {
    throw new VimProtocolError(`RetrievePropertiesEx returned nothing for ${obj.type} ${obj.value}`);
  }
  const [first] = result.missing;
  if (first && !tolerateMissing) throw first;
  return result;
}

/**
 * Lists every object of `type` below the root folder (through a ContainerView) with `paths`,
 * page by page, and destroys the view afterwards.
 */
export async function listByType(
  client: VimClient,
  type: string,
  paths: string[],
  opts: RetrieveOptions = {},
): Promise<ObjectProps[]> {
  const vm = client.serviceContent.viewManager;
  if (!vm) throw new VimProtocolError('the server has no ViewManager');
  const view = await client.call('CreateContainerView', {
    _this: vm,
    container: client.serviceContent.rootFolder,
    type: [type],
    recursive: true,
  });
  if (!isMoRef(view)) throw new VimProtocolError('CreateContainerView returned no view');
  try {
    return await retrieve(
      client,
      [
        {
          _type: 'PropertyFilterSpec',
          propSet: [{ _type: 'PropertySpec', type, pathSet: paths }],
          objectSet: [
            {
              _type: 'ObjectSpec',
              obj: view,
              skip: true,
              selectSet: [{ _type: 'TraversalSpec', type: 'ContainerView', path: 'view', skip: false }],
            },
          ],
        },
      ],
      opts,
    );
  } finally {
    await client.call('DestroyView', { _this: view }).catch(() => undefined);
  }
}
