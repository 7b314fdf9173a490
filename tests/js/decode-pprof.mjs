// Decode a gzipped pprof profile with Datadog's pprof-format (an independent decoder)
// and print JSON: sample types, period, duration, totals, totals per label value,
// mappings, and checks of the references (location/function/mapping ids, string 0).
//
//   node decode-pprof.mjs cpu.pb.gz
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Profile } from 'pprof-format';

const path = process.argv[2];
if (!path) {
  console.error('usage: node decode-pprof.mjs FILE.pb.gz');
  process.exit(2);
}
const profile = Profile.decode(gunzipSync(readFileSync(path)));
const strings = profile.stringTable.strings;
const str = (index) => strings[Number(index)];
const num = (value) => Number(value);

const problems = [];
if (strings[0] !== '') problems.push('string_table[0] is not ""');
const locations = new Map(profile.location.map((l) => [num(l.id), l]));
const functions = new Map(profile.function.map((f) => [num(f.id), f]));
const mappings = new Map(profile.mapping.map((m) => [num(m.id), m]));
for (const location of profile.location) {
  if (num(location.id) === 0) problems.push('location id 0');
  if (num(location.mappingId) && !mappings.has(num(location.mappingId))) {
    problems.push(`location ${location.id}: unknown mapping ${location.mappingId}`);
  }
  for (const line of location.line) {
    if (!functions.has(num(line.functionId))) problems.push(`location ${location.id}: unknown function ${line.functionId}`);
  }
}

const width = profile.sampleType.length;
const total = new Array(width).fill(0);
const byLabel = {};           // key -> value -> [count, ns]
const leaves = {};            // leaf function name -> ns
for (const sample of profile.sample) {
  const values = sample.value.map(num);
  if (values.length !== width) problems.push(`sample with ${values.length} values, ${width} sample types`);
  values.forEach((v, i) => { total[i] += v; });
  for (const id of sample.locationId) {
    if (!locations.has(num(id))) problems.push(`sample: unknown location ${id}`);
  }
  const leaf = locations.get(num(sample.locationId[0]));
  const leafName = leaf && leaf.line.length ? str(functions.get(num(leaf.line[0].functionId)).name) : '';
  leaves[leafName] = (leaves[leafName] || 0) + values[width - 1];
  for (const label of sample.label) {
    const key = str(label.key);
    const value = num(label.str) ? str(label.str) : String(num(label.num));
    byLabel[key] ??= {};
    byLabel[key][value] ??= new Array(width).fill(0);
    values.forEach((v, i) => { byLabel[key][value][i] += v; });
  }
}

console.log(JSON.stringify({
  sample_types: profile.sampleType.map((t) => `${str(t.type)}/${str(t.unit)}`),
  period_type: profile.periodType ? `${str(profile.periodType.type)}/${str(profile.periodType.unit)}` : null,
  period: num(profile.period),
  duration_nanos: num(profile.durationNanos),
  time_nanos: num(profile.timeNanos),
  samples: profile.sample.length,
  locations: profile.location.length,
  functions: profile.function.length,
  total,
  by_label: byLabel,
  leaves,
  mappings: profile.mapping.map((m) => ({ id: num(m.id), file: str(m.filename), build_id: str(m.buildId) })),
  problems,
}, null, 1));
