import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaceRecordSchema, ImageStatusSchema, type ImageStatus } from '@facefleet/protocol';
import { CLI, data, REPO } from './helpers.js';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

type StderrWatcher = (text: string, kill: (signal: NodeJS.Signals) => void) => void;

function facefleet(
  args: string[],
  options: { onStderr?: StderrWatcher; command?: string[] } = {},
): Promise<Run> {
  const [cmd, ...pre] = options.command ?? [process.execPath, CLI];
  const child = spawn(cmd!, [...pre, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk;
    options.onStderr?.(stderr, (signal) => child.kill(signal));
  });
  return new Promise((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
}

function jsonLines(text: string): unknown[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}

function statuses(dir: string): ImageStatus[] {
  return jsonLines(readFileSync(join(dir, '_status.jsonl'), 'utf8')).map((s) =>
    ImageStatusSchema.parse(s),
  );
}

let work: string;
const link = (target: string, path: string) => symlinkSync(data(target), join(work, path));

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-cli-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('facefleet embed without --out', () => {
  let run: Run;
  const dir = () => join(work, 'mixed');

  beforeAll(async () => {
    mkdirSync(join(dir(), 'sub'), { recursive: true });
    link('ageitgey_face_recognition/tests/test_images/obama.jpg', 'mixed/obama.jpg');
    link('ageitgey_face_recognition/examples/two_people.jpg', 'mixed/two_people.jpg');
    link('justadudewhohacks_face-api.js/test/images/white.png', 'mixed/white.png');
    link('derived/empty.jpg', 'mixed/empty.jpg');
    link('derived/not_an_image.jpg', 'mixed/not_an_image.jpg');
    link('ageitgey_face_recognition/tests/test_images/biden.jpg', 'mixed/sub/biden.jpg');
    writeFileSync(join(dir(), 'notes.txt'), 'not an image and not named like one');
    run = await facefleet(['embed', dir(), '--workers', '2']);
  });

  it('exits 0: failed images are results, not a reason to stop', () => {
    expect(run.code).toBe(0);
  });

  it('prints face records as JSON-NL on stdout and nothing else', () => {
    const records = jsonLines(run.stdout).map((r) => FaceRecordSchema.strict().parse(r));

    expect(records.map((r) => r.id).sort()).toEqual(['biden', 'obama', 'two_people', 'two_people']);
  });

  it('closes with a summary on stderr and names each failed image with its code', () => {
    expect(run.stderr).toMatch(/6 images, 4 faces, 1 without faces, 2 failed, [\d.]+ images\/s/);
    expect(run.stderr).toContain('IMAGE_EMPTY');
    expect(run.stderr).toContain('IMAGE_UNSUPPORTED');
    // auto takes onnxruntime-node, whose CPU binaries ship inside its npm package.
    expect(run.stderr).toMatch(/"backend":\{"name":"onnx"/);
    expect(run.stderr).toMatch(/2 processes, onnx backend\)/);
  });
});

describe('facefleet embed --out', () => {
  const out = () => join(work, 'out');
  const src = () => join(work, 'broadcast');
  let first: Run;

  beforeAll(async () => {
    mkdirSync(src());
    link(
      'ageitgey_face_recognition/tests/test_images/obama.jpg',
      'broadcast/NEWS_20230306-000001.jpg',
    );
    link('ageitgey_face_recognition/examples/two_people.jpg', 'broadcast/NEWS_20230306-000002.jpg');
    link('derived/empty.jpg', 'broadcast/NEWS_20230306-000003.jpg');
    link('justadudewhohacks_face-api.js/test/images/white.png', 'broadcast/portrait.png');
    first = await facefleet(['embed', src(), '--out', out(), '--workers', '2']);
  });

  it('appends records to one file per broadcast and a status line per image', () => {
    const records = jsonLines(readFileSync(join(out(), 'NEWS_20230306.json'), 'utf8'));
    const byId = new Map(statuses(out()).map((s) => [s.id, s]));

    expect(first.code).toBe(0);
    expect(first.stdout).toBe('');
    expect(records).toHaveLength(3);
    expect(byId.get('NEWS_20230306-000001')).toMatchObject({
      status: 'ok',
      faces: 1,
      group: 'NEWS_20230306',
    });
    expect(byId.get('NEWS_20230306-000002')).toMatchObject({ status: 'ok', faces: 2 });
    expect(byId.get('NEWS_20230306-000003')).toMatchObject({
      status: 'failed',
      faces: 0,
      error: { code: 'IMAGE_EMPTY' },
    });
    expect(byId.get('portrait')).toMatchObject({ status: 'no_faces', faces: 0, group: 'faces' });
    expect(byId.size).toBe(4);
  });

  it('when run again, skips every image already done and writes nothing', async () => {
    const before = readFileSync(join(out(), '_status.jsonl'), 'utf8');
    const again = await facefleet(['embed', src(), '--out', out()]);

    expect(again.code).toBe(0);
    expect(again.stderr).toContain('all 4 images are already in');
    expect(readFileSync(join(out(), '_status.jsonl'), 'utf8')).toBe(before);
  });

  it('with --group, names output files by the pattern', async () => {
    const grouped = join(work, 'grouped');
    const run = await facefleet([
      'embed',
      src(),
      '--out',
      grouped,
      '--group',
      '^([A-Z]+)_',
      '--workers',
      '1',
    ]);

    expect(run.code).toBe(0);
    expect(jsonLines(readFileSync(join(grouped, 'NEWS.json'), 'utf8'))).toHaveLength(3);
  });
});

describe('facefleet embed interrupted and resumed', () => {
  it('ends with every image exactly once and no duplicated face record', async () => {
    const src = join(work, 'many');
    const out = join(work, 'many-out');
    mkdirSync(src);
    const faces = ['obama.jpg', 'obama2.jpg', 'obama3.jpg', 'biden.jpg'];
    const IMAGES = 16;
    for (let i = 0; i < IMAGES; i += 1)
      link(
        `ageitgey_face_recognition/tests/test_images/${faces[i % 4]}`,
        `many/clip-${String(i).padStart(4, '0')}.jpg`,
      );

    // Ctrl-C after a few images, then a hard kill of the next run, then a run to the end. Each cut
    // comes once the run has written two more status lines than it found: after real progress,
    // before the end, however fast the backend is.
    const written = () => {
      const file = join(out, '_status.jsonl');
      return existsSync(file) ? readFileSync(file, 'utf8').split('\n').length - 1 : 0;
    };
    const timers: NodeJS.Timeout[] = [];
    const cutAfter = (signal: NodeJS.Signals) => {
      let armed = true;
      return (text: string, kill: (signal: NodeJS.Signals) => void) => {
        if (!armed || !/face engine backend chosen/.test(text)) return;
        armed = false;
        const start = written();
        const timer = setInterval(() => {
          if (written() < start + 2) return;
          clearInterval(timer);
          kill(signal);
        }, 10);
        timers.push(timer);
      };
    };
    const cut = await facefleet(['embed', src, '--out', out, '--workers', '1'], {
      onStderr: cutAfter('SIGINT'),
    });
    const afterCut = statuses(out).length;
    const killed = await facefleet(['embed', src, '--out', out, '--workers', '1'], {
      onStderr: cutAfter('SIGKILL'),
    });
    timers.forEach(clearInterval);
    const partial = statuses(out).length;
    const resumed = await facefleet(['embed', src, '--out', out, '--workers', '2']);
    const all = statuses(out);
    const records = jsonLines(readFileSync(join(out, 'clip.json'), 'utf8')) as Array<{
      id: string;
    }>;

    expect(cut.code).toBe(130);
    expect(cut.stderr).toMatch(/interrupted: \d+ not processed/);
    expect(killed.signal).toBe('SIGKILL');
    expect(afterCut).toBeGreaterThan(0);
    expect(partial).toBeGreaterThan(afterCut);
    expect(partial).toBeLessThan(IMAGES);
    expect(resumed.code).toBe(0);
    expect(new Set(all.map((s) => s.key)).size).toBe(IMAGES);
    expect(all).toHaveLength(IMAGES);
    expect(records).toHaveLength(IMAGES);
    expect(new Set(records.map((r) => r.id)).size).toBe(IMAGES);
  });
});

describe('facefleet embed piped into a reader that stops early (| head)', () => {
  it('stops quietly with exit 0 and says so, instead of dying on EPIPE', async () => {
    const child = spawn(process.execPath, [CLI, 'embed', join(work, 'mixed'), '--workers', '1'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise((resolve) => child.on('close', resolve));

    expect(code).toBe(0);
    expect(stderr).toMatch(/stdout was closed: \d+ not processed/);
    expect(stderr).not.toContain('EPIPE');
  });
});

describe('facefleet embed --aligned', () => {
  it('takes each chip as one face covering the whole image', async () => {
    const run = await facefleet([
      'embed',
      data('justadudewhohacks_face-api.js/test/images/face1.png'),
      '--aligned',
      '--workers',
      '1',
    ]);
    const [record] = jsonLines(run.stdout).map((r) => FaceRecordSchema.parse(r));

    expect(run.code).toBe(0);
    expect(record?.bbox).toEqual([0, 150, 150, 0]);
  });
});

describe('facefleet embed usage', () => {
  it('says so and exits 1 when a folder holds no images', async () => {
    const empty = join(work, 'empty-dir');
    mkdirSync(empty);
    const run = await facefleet(['embed', empty]);

    expect(run.code).toBe(1);
    expect(run.stderr).toContain('no image files found');
  });

  it('exits 2 for a path that does not exist', async () => {
    const run = await facefleet(['embed', join(work, 'nope')]);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('no such file or directory');
  });

  it('exits 2 for an out-of-range option', async () => {
    const run = await facefleet(['embed', work, '--min-confidence', '3']);

    expect(run.code).toBe(2);
  });

  it('runs as `npx facefleet` from the repository root', async () => {
    const run = await facefleet(['--version'], { command: ['npx', 'facefleet'] });

    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe('0.1.0');
  });
});
