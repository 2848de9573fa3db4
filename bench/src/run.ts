import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { benchEngine, type EngineRow, type TinyMisses } from './engine.js';
import { benchEnqueue } from './enqueue.js';
import { benchFaceembed, type LatencyRow } from './faceembed.js';
import { benchFleet, engineMsOneAtATime, type FleetRow, type PoolRow } from './fleet.js';
import { benchMemory, type MemoryRow } from './memory.js';
import { ROOT } from './processes.js';
import { round } from './stats.js';

/**
 * `npm run bench`: a fixed corpus, a warm-up, several passes, medians; a JSON report in
 * bench/results/latest.json and Markdown tables on stdout. No network: images from
 * ../shared/testdata and the photos that @vladmandic/face-api ships; Redis on REDIS_URL for the
 * fleet parts. BENCH_ONLY=engine,fleet,faceembed,enqueue,memory picks parts; BENCH_REPEATS,
 * BENCH_FLEET_IMAGES, BENCH_FLEET_ROUNDS and BENCH_MEMORY_IMAGES size them.
 */
const testdata = process.env.FACEFLEET_TESTDATA ?? resolve(ROOT, '..', 'shared', 'testdata');
const demo = join(
  dirname(createRequire(import.meta.url).resolve('@vladmandic/face-api/package.json')),
  'demo',
);
const repeats = Number(process.env.BENCH_REPEATS ?? 5);
const only = new Set(
  (process.env.BENCH_ONLY ?? 'engine,fleet,faceembed,enqueue,memory')
    .split(',')
    .map((s) => s.trim()),
);

const BACKENDS = ['onnx', 'wasm'] as const;
type Backend = (typeof BACKENDS)[number];

const frame = join(testdata, 'ageitgey_face_recognition/examples/obama-720p.jpg');
const frames720 = Array.from({ length: 5 }, () => frame);
const groups = [
  join(testdata, 'justadudewhohacks_face-api.js/test/images/faces.jpg'),
  join(testdata, 'justadudewhohacks_face-api.js/examples/images/bbt1.jpg'),
  join(testdata, 'ageitgey_face_recognition/examples/two_people.jpg'),
  ...[1, 2, 3, 4, 5, 6].map((i) => join(demo, `sample${i}.jpg`)),
];

const report: {
  at: string;
  machine: { cpu: string | undefined; cores: number; node: string };
  repeats: number;
  engine?: EngineRow[];
  tinyDetector?: TinyMisses[];
  fleet?: Array<{
    backend: Backend;
    rows: FleetRow[];
    /** The same inference processes fed directly, without Redis, queue or sink. */
    direct: PoolRow[];
    scaling: number;
    /** The fleet's time per round against the direct feed's, median over rounds, 1 process. */
    overheadPercent: number;
    /** The same with 2 processes. */
    overheadPercentTwo: number;
  }>;
  faceembed?: { rows: LatencyRow[]; engineMs: number; overheadMs: number | undefined };
  enqueue?: { jobs: number; jobsPerSecond: number };
  memory?: MemoryRow[];
} = {
  at: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
  repeats,
};

const log = (what: string) => process.stderr.write(`bench: ${what}\n`);

if (only.has('engine')) {
  log('engine, one process');
  const a = await benchEngine('1280x720 frame, one face', frames720, repeats);
  const b = await benchEngine('group photos', groups, repeats);
  report.engine = [...a.rows, ...b.rows];
  report.tinyDetector = [a.tiny, b.tiny];
}

if (only.has('fleet')) {
  const images = Number(process.env.BENCH_FLEET_IMAGES ?? 100);
  const rounds = Number(process.env.BENCH_FLEET_ROUNDS ?? 5);
  report.fleet = [];
  for (const backend of BACKENDS) {
    log(
      `fleet through Redis on ${backend} beside the same processes fed directly, ${rounds} rounds of ${images} frames each, 1 then 2 inference processes`,
    );
    const one = await benchFleet(frame, images, 1, backend, rounds);
    const two = await benchFleet(frame, images, 2, backend, rounds);
    report.fleet.push({
      backend,
      rows: [one.fleet, two.fleet],
      direct: [one.direct, two.direct],
      scaling: round(two.fleet.imagesPerSecond / one.fleet.imagesPerSecond),
      // What Redis, BullMQ and the sink cost per image: the fleet with one process against that
      // process fed directly, round by round.
      overheadPercent: one.overheadPercent,
      overheadPercentTwo: two.overheadPercent,
    });
  }
}

if (only.has('faceembed')) {
  log('POST /faceembed latency');
  const rows = await benchFaceembed(frame, 18088, [
    { clients: 1, requestsPerClient: 20 },
    { clients: 8, requestsPerClient: 5 },
  ]);
  const single = rows.find((r) => r.clients === 1);
  // The engine's own time for one request: an inference process fed one frame at a time.
  const own =
    report.fleet?.find((f) => f.backend === 'onnx')?.direct[0]?.msOneAtATime ??
    (await engineMsOneAtATime(frame));
  report.faceembed = {
    rows,
    engineMs: own,
    overheadMs: single ? round(single.p50 - own, 1) : undefined,
  };
}

if (only.has('enqueue')) {
  log('enqueue rate');
  report.enqueue = await benchEnqueue(10_000);
}

if (only.has('memory')) {
  const images = Number(process.env.BENCH_MEMORY_IMAGES ?? 500);
  log(`resident memory of one inference process over ${images} images`);
  report.memory = [];
  for (const backend of BACKENDS)
    report.memory.push(await benchMemory([...frames720.slice(0, 1), ...groups], images, backend));
}

mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(ROOT, 'bench', 'results', 'latest.json'),
  `${JSON.stringify(report, null, 2)}\n`,
);

const out: string[] = [];
out.push(
  `facefleet bench, ${report.at}, ${report.machine.cpu} (${report.machine.cores} cores), Node ${report.machine.node}, ${repeats} passes, medians`,
  '',
);
if (report.engine) {
  out.push(
    '| corpus | pipeline | images | faces | images/s | faces/s | ms read | ms decode | ms infer | ms detect | ms landmarks | ms descriptor |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const r of report.engine)
    out.push(
      `| ${r.corpus} | ${r.pipeline} | ${r.images} | ${r.faces} | ${r.imagesPerSecond} | ${r.facesPerSecond} | ${r.msRead} | ${r.msDecode} | ${r.msInfer} | ${r.msDetect ?? ''} | ${r.msLandmarks ?? ''} | ${r.msDescriptor ?? ''} |`,
    );
  for (const corpus of new Set(report.engine.map((r) => r.corpus))) {
    const ref = report.engine.find(
      (r) => r.corpus === corpus && r.pipeline === 'face-api reference',
    )!;
    for (const backend of BACKENDS) {
      const ours = report.engine.find(
        (r) => r.corpus === corpus && r.pipeline === `facefleet ${backend}`,
      )!;
      out.push(
        `${corpus}: facefleet ${backend} / reference = ${round(ours.imagesPerSecond / ref.imagesPerSecond)}× overall, ${round(ref.msInfer / ours.msInfer)}× in inference alone`,
      );
    }
  }
  for (const t of report.tinyDetector ?? [])
    out.push(
      `tiny detector, ${t.corpus}: ${t.tinyFaces} faces found, ${t.missed} of SSD's ${t.ssdFaces} missed`,
    );
  out.push('');
}
if (report.fleet) {
  out.push(
    '| backend | inference processes | images a round | fleet: seconds (median of rounds) | fleet: images/s | fed directly: images/s |',
    '| --- | --- | --- | --- | --- | --- |',
  );
  for (const f of report.fleet)
    for (const [i, r] of f.rows.entries())
      out.push(
        `| ${f.backend} | ${r.processes} | ${r.images} | ${r.seconds} | ${r.imagesPerSecond} | ${f.direct[i]?.imagesPerSecond ?? ''} |`,
      );
  const parts = (cpu: Record<string, number>) =>
    Object.entries(cpu)
      .map(([part, ms]) => `${part} ${ms}`)
      .join(', ');
  for (const f of report.fleet) {
    out.push(
      `${f.backend}: scaling 1 → 2 processes ${f.scaling}×; queue + sink overhead (fleet against the same processes fed directly, median of paired rounds) ${f.overheadPercent} % with 1 process, ${f.overheadPercentTwo} % with 2`,
    );
    for (const [i, r] of f.rows.entries()) {
      const { inference = 0, ...rest } = r.cpuMsPerImage;
      const around = Object.values(rest).reduce((a, b) => a + b, 0);
      out.push(
        `${f.backend}, ${r.processes} inference process(es), CPU ms per image: fleet ${parts(r.cpuMsPerImage)} (around the inference: ${round(around, 1)} ms, ${round((100 * around) / inference, 1)} % of it); fed directly ${parts(f.direct[i]?.cpuMsPerImage ?? {})}`,
      );
    }
  }
  out.push('');
}
if (report.faceembed) {
  out.push('| /faceembed | requests | p50 ms | p95 ms |', '| --- | --- | --- | --- |');
  for (const r of report.faceembed.rows)
    out.push(`| ${r.clients} client(s) | ${r.requests} | ${r.p50} | ${r.p95} |`);
  out.push(
    `onnx backend; the engine's own time per frame (one process, one frame at a time): ${report.faceembed.engineMs} ms; p50 overhead with 1 client: ${report.faceembed.overheadMs ?? 'n/a'} ms`,
    '',
  );
}
if (report.enqueue)
  out.push(`enqueue: ${report.enqueue.jobs} jobs at ${report.enqueue.jobsPerSecond} jobs/s`);
for (const m of report.memory ?? [])
  out.push(
    `memory of one inference process (${m.backend}): ${Object.entries(m.rssMiB)
      .map(([k, v]) => `${v} MiB ${k}`)
      .join(', ')}; ${m.tensors} tensors`,
  );
console.log(out.join('\n'));
