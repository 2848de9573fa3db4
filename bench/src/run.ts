import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { benchEngine, type EngineRow } from './engine.js';
import { benchEnqueue } from './enqueue.js';

/**
 * `npm run bench`: a fixed corpus, a warm-up pass, several passes, medians; a JSON report in
 * bench/results/ and a table on stdout. No network: images from ../shared/testdata and the
 * photos that @vladmandic/face-api ships. Redis on REDIS_URL for the enqueue rate.
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const testdata = process.env.FACEFLEET_TESTDATA ?? resolve(root, '..', 'shared', 'testdata');
const demo = join(
  dirname(createRequire(import.meta.url).resolve('@vladmandic/face-api/package.json')),
  'demo',
);
const repeats = Number(process.env.BENCH_REPEATS ?? 5);

const frames720 = Array.from({ length: 5 }, () =>
  join(testdata, 'ageitgey_face_recognition/examples/obama-720p.jpg'),
);
const groups = [
  join(testdata, 'justadudewhohacks_face-api.js/test/images/faces.jpg'),
  join(testdata, 'justadudewhohacks_face-api.js/examples/images/bbt1.jpg'),
  join(testdata, 'ageitgey_face_recognition/examples/two_people.jpg'),
  ...[1, 2, 3, 4, 5, 6].map((i) => join(demo, `sample${i}.jpg`)),
];

const engineRows: EngineRow[] = [
  ...(await benchEngine('1280x720 frame, one face', frames720, repeats)),
  ...(await benchEngine('group photos', groups, repeats)),
];
const enqueue = await benchEnqueue(10_000);

const report = {
  at: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
  repeats,
  engine: engineRows,
  enqueue,
};
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(root, 'bench', 'results', 'latest.json'),
  `${JSON.stringify(report, null, 2)}\n`,
);

console.log(
  `facefleet bench, ${report.at}, ${report.machine.cpu} (${report.machine.cores} cores), ${repeats} passes, medians`,
);
console.log(
  '| corpus | pipeline | images | faces | images/s (1 process) | ms read | ms decode | ms infer |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of engineRows) {
  console.log(
    `| ${r.corpus} | ${r.pipeline} | ${r.images} | ${r.faces} | ${r.imagesPerSecond} | ${r.msRead} | ${r.msDecode} | ${r.msInfer} |`,
  );
}
console.log(`enqueue: ${enqueue.jobs} jobs at ${enqueue.jobsPerSecond} jobs/s`);
