import { collectShapes } from './dist/test/conformance/shapes.js';
import { startVcsim } from './dist/test/conformance/vcsim.js';
import { withLab } from './dist/test/lab/support.js';
const sim = await startVcsim();
const t = await withLab();
const V = await collectShapes(sim.info);
const L = await collectShapes({ url: t.lab.url, username: t.lab.username, password: t.lab.password, fingerprint256: t.lab.fingerprint256 });
for (const k of new Set([...V.keys(), ...L.keys()])) {
  const v = V.get(k) ?? new Set(), l = L.get(k) ?? new Set();
  const onlyV = [...v].filter(x => !l.has(x)), onlyL = [...l].filter(x => !v.has(x));
  if (onlyV.length || onlyL.length) { console.log('==', k, V.has(k), L.has(k)); onlyV.forEach(x => console.log('  V', x)); onlyL.forEach(x => console.log('  L', x)); }
}
await t.close(); await sim.stop();
