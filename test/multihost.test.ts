import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, data, REPO } from './helpers.js';
import {
  byId,
  freshPrefix,
  readRecords,
  readStatuses,
  until,
  waitForLog,
  waitForStatuses,
  type Running,
} from './fleet-helpers.js';

/*
 * Four "hosts" on this machine, each a Linux network namespace: Redis (and the sink) in one,
 * a worker in each of two more, the producer in the fourth. Every other host reaches Redis over
 * its own veth pair, a /30 of its own, and nothing else: no host has a route to any other host,
 * and none of them shares the test runner's network (where the suite's usual Redis listens).
 */

const ID = randomBytes(3).toString('hex');
const NS = {
  redis: `ff-${ID}-redis`,
  a: `ff-${ID}-host-a`,
  b: `ff-${ID}-host-b`,
  producer: `ff-${ID}-producer`,
} as const;
type Host = Exclude<keyof typeof NS, 'redis'>;
const LINK: Record<Host, number> = { a: 1, b: 2, producer: 3 };
const REDIS_PORT = 6379;
/** The worker hosts' claim on a job lasts this long unrenewed; stalled checks run as often. */
const LOCK_MS = '3000';
const IMAGES = [
  'ageitgey_face_recognition/examples/obama-240p.jpg',
  'ageitgey_face_recognition/examples/obama_small.jpg',
];

/** The host side's interface name (at most 15 characters); the Redis side ends in `r`. */
const ifname = (host: Host, side: 'h' | 'r') => `ff${ID}${LINK[host]}${side}`;
/**
 * Link n is 10.47.n.0/30: Redis's end .1, the host's .2. These addresses exist only inside the
 * test's namespaces, so they clash with nothing on the machine, nor with another run's.
 */
const redisAddress = (host: Host) => `10.47.${LINK[host]}.1`;
const redisUrl = (host: Host) => `redis://${redisAddress(host)}:${REDIS_PORT}`;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why these tests cannot run here, or undefined when they can (root with `ip netns`). */
function missingCapability(): string | undefined {
  if (process.getuid?.() !== 0) return 'they need root, to make network namespaces';
  const probe = `ff-${ID}-probe`;
  const added = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (added.error) return `\`ip\` (iproute2) does not run: ${added.error.message}`;
  if (added.status !== 0) return `\`ip netns add\` fails: ${added.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}

const missing = missingCapability();
if (missing) console.info(`multihost tests skipped: ${missing}`);

let work: string;
let t0 = Date.now();
const step = (what: string) =>
  console.info(`multihost ${((Date.now() - t0) / 1000).toFixed(1)}s: ${what}`);
const running: Running[] = [];
const made: string[] = [];

/** Starts `argv` inside a namespace; `ip netns exec` execs it, so the pid is the program's own. */
function startIn(ns: string, argv: string[], env: Record<string, string>): Running {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (chunk: Buffer) => (log += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => resolve(code)),
  );
  const ended = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const handle: Running = {
    child,
    log: () => log,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return ended;
    },
  };
  running.push(handle);
  return handle;
}

function facefleetIn(ns: string, args: string[], env: Record<string, string>): Running {
  return startIn(ns, [process.execPath, CLI, ...args], env);
}

/** Runs Redis commands inside the Redis host, one reply line per command. */
function redisCli(commands: string[]): string[] {
  const { stdout } = spawnSync(
    'ip',
    ['netns', 'exec', NS.redis, 'redis-cli', '-p', String(REDIS_PORT)],
    { input: commands.join('\n') + '\n', encoding: 'utf8' },
  );
  return stdout.trim().split('\n');
}

/** Keys whose result was published again after it was already in the results queue. */
function duplicatedResults(prefix: string): string[] {
  const lines = redisCli([`XRANGE ${prefix}:faces-results:events - +`]);
  return lines.flatMap((line, i) =>
    line === 'duplicated' && lines[i + 1] === 'jobId' ? [lines[i + 2]!] : [],
  );
}

/** Kills every process in a namespace: the host is gone as if unplugged, children and all. */
function killHost(ns: string): number[] {
  const pids = ip('netns', 'pids', ns).split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  return pids;
}

function makeHosts(): void {
  for (const ns of Object.values(NS)) {
    ip('netns', 'add', ns);
    made.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // A socket whose sends failed while its link was down backs off up to TCP's cap (120 s by
    // default) before trying again, so a host that was cut off for a minute would sit idle for
    // up to two more after its link is back. These hosts cap it at 1 s (Linux 6.15 and later;
    // per namespace), so that the rejoin shows within the test; elsewhere it only takes longer.
    const rtoMax = '/proc/sys/net/ipv4/tcp_rto_max_ms';
    spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', `[ -e ${rtoMax} ] && echo 1000 > ${rtoMax}`]);
  }
  for (const host of Object.keys(LINK) as Host[]) {
    const [r, h] = [ifname(host, 'r'), ifname(host, 'h')];
    ip('link', 'add', r, 'netns', NS.redis, 'type', 'veth', 'peer', 'name', h, 'netns', NS[host]);
    ip('-n', NS.redis, 'addr', 'add', `${redisAddress(host)}/30`, 'dev', r);
    ip('-n', NS[host], 'addr', 'add', `10.47.${LINK[host]}.2/30`, 'dev', h);
    ip('-n', NS.redis, 'link', 'set', r, 'up');
    ip('-n', NS[host], 'link', 'set', h, 'up');
  }
}

function removeHosts(): void {
  for (const ns of made) {
    killHost(ns);
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

/** `count` links named `<name>-000001.jpg`…, to small photos of one face each. */
function linkFolder(name: string, count: number): string {
  const dir = join(work, name);
  mkdirSync(dir);
  for (let i = 1; i <= count; i += 1) {
    const source = IMAGES[i % IMAGES.length]!;
    symlinkSync(data(source), join(dir, `${name}-${String(i).padStart(6, '0')}.jpg`));
  }
  return dir;
}

/** Each image exactly once: one status per key and per id, and one face record per face. */
function expectExactlyOnce(out: string, groups: Record<string, number>): void {
  const statuses = readStatuses(out);
  const total = Object.values(groups).reduce((a, b) => a + b, 0);
  expect(statuses).toHaveLength(total);
  expect(new Set(statuses.map((s) => s.key)).size).toBe(total);
  expect(new Set(statuses.map((s) => s.id)).size).toBe(total);
  expect(statuses.filter((s) => s.status !== 'ok')).toEqual([]);
  for (const [group, count] of Object.entries(groups)) {
    const records = byId(readRecords(join(out, `${group}.json`)));
    const mine = statuses.filter((s) => s.group === group);
    expect(mine).toHaveLength(count);
    expect(records.size).toBe(count);
    for (const s of mine) expect(records.get(String(s.id))?.length).toBe(s.faces);
  }
}

/** Both queues empty: nothing waiting, running or delayed, so a late duplicate would have shown. */
async function drained(prefix: string): Promise<void> {
  const keys = ['faces', 'faces-results'].flatMap((q) => [
    `LLEN ${prefix}:${q}:wait`,
    `LLEN ${prefix}:${q}:active`,
    `ZCARD ${prefix}:${q}:prioritized`,
    `ZCARD ${prefix}:${q}:delayed`,
  ]);
  await until(() => redisCli(keys).every((n) => n === '0'), 'both queues to drain', 60_000, 250);
}

/** The worker that last took each job: the name (with its pid) BullMQ keeps in the job's hash. */
function processedBy(prefix: string, keys: string[]): string[] {
  return keys.length === 0 ? [] : redisCli(keys.map((k) => `HGET ${prefix}:faces:${k} pb`));
}

/**
 * The active jobs a worker holds whose result it has not published yet. Asked once the worker's
 * host can no longer reach Redis, so that the answer cannot change under it.
 */
function heldBy(prefix: string, worker: Running): string[] {
  const active = redisCli([`LRANGE ${prefix}:faces:active 0 -1`]).filter(Boolean);
  const owners = processedBy(prefix, active);
  const published = redisCli(active.map((k) => `EXISTS ${prefix}:faces-results:${k}`));
  return active.filter(
    (_, i) => owners[i]?.includes(`:${worker.child.pid}:`) && published[i] === '0',
  );
}

beforeAll(() => {
  if (missing) return;
  work = mkdtempSync(join(tmpdir(), 'facefleet-multihost-'));
  makeHosts();
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  removeHosts();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(missing !== undefined)('four hosts in network namespaces over veth links', () => {
  it('loses a worker host to a cut link, then another to a kill: the other finishes, each image once', async () => {
    t0 = Date.now();
    const prefix = freshPrefix();
    const out = join(work, 'out');
    const env = (host: Host | 'redis') => ({
      FACEFLEET_PREFIX: prefix,
      REDIS_URL: host === 'redis' ? `redis://127.0.0.1:${REDIS_PORT}` : redisUrl(host),
    });
    const redisDir = join(work, 'redis');
    mkdirSync(redisDir);
    startIn(
      NS.redis,
      [
        'redis-server',
        ...['--port', String(REDIS_PORT), '--bind', '0.0.0.0', '--protected-mode', 'no'],
        ...['--dir', redisDir, '--save', '', '--appendonly', 'no'],
      ],
      {},
    );
    await until(() => redisCli(['PING'])[0] === 'PONG', 'redis in its namespace', 10_000);

    // The links are the only way out: host A reaches Redis at its own address, not at B's.
    const probe = (host: Host, address: string) =>
      spawnSync(
        'ip',
        ['netns', 'exec', NS[host], 'redis-cli', '-h', address, '-p', String(REDIS_PORT), 'ping'],
        { encoding: 'utf8', timeout: 5_000 },
      ).stdout.trim();
    expect(probe('a', redisAddress('a'))).toBe('PONG');
    expect(probe('a', redisAddress('b'))).not.toBe('PONG');
    expect(probe('a', '127.0.0.1')).not.toBe('PONG');

    const sink = facefleetIn(NS.redis, ['sink', '--out', out], env('redis'));
    const workerArgs = ['worker', '--concurrency', '1', '--lock-ms', LOCK_MS];
    const a = facefleetIn(NS.a, workerArgs, env('a'));
    const b = facefleetIn(NS.b, workerArgs, env('b'));
    await Promise.all([waitForLog(a, /worker started/), waitForLog(b, /worker started/)]);
    await waitForLog(sink, /sink started/);
    step('workers started');

    // Phase 1: 200 images; host A's link goes down halfway, with jobs in its hands.
    const first = facefleetIn(NS.producer, ['enqueue', linkFolder('cut', 200)], env('producer'));
    expect(await first.exited).toBe(0);
    expect(first.log()).toContain('200 jobs added');
    await waitForStatuses(out, 100, 150_000);
    ip('-n', NS.a, 'link', 'set', ifname('a', 'h'), 'down');
    const atCut = readStatuses(out).length;
    const heldByA = heldBy(prefix, a);
    expect(heldByA.length).toBeGreaterThan(0);
    step(`A cut off at ${atCut}`);

    await waitForStatuses(out, 200, 150_000);
    await drained(prefix);
    step('B finished phase 1');
    expectExactlyOnce(out, { cut: 200 });
    expect(a.child.exitCode).toBeNull();

    // B found the jobs A held stalled once their locks ran out, and ran them again.
    const stalled = [...b.log().matchAll(/"jobId":"([^"]+)","msg":"job stalled/g)].map((m) => m[1]);
    expect(stalled).toEqual(expect.arrayContaining(heldByA));
    // The first one's result leaves the results queue, as results do once 1000 newer ones are
    // done (removeOnComplete), so that A's late copy of it gets past the queue to the sink.
    const [trimmed, ...kept] = heldByA as [string, ...string[]];
    redisCli([
      `ZREM ${prefix}:faces-results:completed ${trimmed}`,
      `DEL ${prefix}:faces-results:${trimmed}`,
    ]);

    // The link comes back. A wakes up with the results of those jobs and publishes them under
    // their job keys: the results queue drops the copies of the ones it still holds, and the
    // sink, which has written every key once, skips the other.
    const beforeUp = a.log().length;
    ip('-n', NS.a, 'link', 'set', ifname('a', 'h'), 'up');
    await until(
      () => /redis reachable again/.test(a.log().slice(beforeUp)),
      `host A to reach Redis again:\n${a.log()}`,
      150_000,
      250,
    );
    step('A reconnected');
    await until(
      () => {
        const [score] = redisCli([`ZSCORE ${prefix}:faces-results:completed ${trimmed}`]);
        const duplicated = duplicatedResults(prefix);
        return score !== '' && kept.every((key) => duplicated.includes(key));
      },
      `host A to publish the results of ${heldByA.join(', ')} again`,
      30_000,
      250,
    );
    await drained(prefix);
    expectExactlyOnce(out, { cut: 200 });

    // Phase 2: 30 more; every process of host B is killed midway, and A, back on its link,
    // finishes them.
    const second = facefleetIn(NS.producer, ['enqueue', linkFolder('kill', 30)], env('producer'));
    expect(await second.exited).toBe(0);
    await waitForStatuses(out, 205);
    const beforeKill = a.log().length;
    const killed = killHost(NS.b);
    await until(() => ip('netns', 'pids', NS.b).trim() === '', 'host B to be gone', 10_000, 20);
    const heldByB = heldBy(prefix, b);
    step(`B killed at ${readStatuses(out).length}`);
    expect(killed).toContain(b.child.pid);
    expect(killed.length).toBeGreaterThan(1); // the worker and its inference process

    await waitForStatuses(out, 230, 120_000);
    await drained(prefix);
    step('A finished phase 2');
    expectExactlyOnce(out, { cut: 200, kill: 30 });
    // A found the jobs B held stalled, and ran them again.
    expect(heldByB.length).toBeGreaterThan(0);
    expect(a.log().slice(beforeKill)).toMatch(/job stalled; it will run again/);
    for (const owner of processedBy(prefix, heldByB)) expect(owner).toContain(`:${a.child.pid}:`);
    expect(a.child.exitCode).toBeNull();
    // Every image written once; A's late copy that reached the sink was skipped there.
    expect(await sink.stop('SIGTERM')).toBe(0);
    expect(sink.log()).toMatch(/"written":230,"duplicates":[1-9]/);
  }, 300_000);
});
