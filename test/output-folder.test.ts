import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FolderBusyError, OutputFolder, STATUS_FILE } from '@facefleet/fleet';
import type { ImageResult } from '@facefleet/protocol';

function result(id: string, faces: number): ImageResult {
  const records = Array.from({ length: faces }, (_, i) => ({
    id,
    bbox: [i, 2, 3, 4] as [number, number, number, number],
    embed: Array(128).fill(i),
  }));
  return {
    status: { id, key: `file_${id}`, status: faces > 0 ? 'ok' : 'no_faces', faces },
    records,
  };
}

function lines(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n').filter(Boolean);
}

describe('OutputFolder', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'facefleet-out-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes face records to <group>.json and one status line per image', () => {
    const out = OutputFolder.open(dir);
    out.write(result('news-000001', 2));
    out.write(result('news-000002', 0));
    out.write(result('portrait', 1));

    expect(lines(join(dir, 'news.json'))).toHaveLength(2);
    expect(lines(join(dir, 'faces.json'))).toHaveLength(1);
    expect(lines(join(dir, STATUS_FILE)).map((l) => JSON.parse(l).group)).toEqual([
      'news',
      'news',
      'faces',
    ]);
  });

  it('when reopened, skips images already written', () => {
    OutputFolder.open(dir).write(result('a-1', 1));
    const again = OutputFolder.open(dir);

    expect(again.has('file_a-1')).toBe(true);
    expect(again.write(result('a-1', 1))).toBe(false);
    expect(lines(join(dir, 'a.json'))).toHaveLength(1);
  });

  it('when a run died between records and status, cuts the orphan records before writing again', () => {
    const out = OutputFolder.open(dir);
    out.write(result('a-1', 2));
    // The crash: records of a-2 written, a torn third line, and no status line for a-2.
    appendFileSync(
      join(dir, 'a.json'),
      `${JSON.stringify(result('a-2', 1).records[0])}\n{"id":"a-2","bb`,
    );
    appendFileSync(join(dir, STATUS_FILE), '{"id":"a-2","sta');

    const resumed = OutputFolder.open(dir);
    resumed.write(result('a-2', 3));

    const records = lines(join(dir, 'a.json')).map((l) => JSON.parse(l).id);
    expect(records).toEqual(['a-1', 'a-1', 'a-2', 'a-2', 'a-2']);
    expect(lines(join(dir, STATUS_FILE)).map((l) => JSON.parse(l).id)).toEqual(['a-1', 'a-2']);
  });
});

describe('OutputFolder and failed images', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'facefleet-out-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function failed(id: string, code: 'IMAGE_EMPTY' | 'URL_TIMEOUT'): ImageResult {
    return {
      status: { id, key: `file_${id}`, status: 'failed', faces: 0, error: { code, message: 'm' } },
      records: [],
    };
  }

  it('counts a permanent failure as done, a retryable one as not, and every failure as not with retryFailed', () => {
    const out = OutputFolder.open(dir);
    out.write(failed('empty', 'IMAGE_EMPTY'));
    out.write(failed('slow', 'URL_TIMEOUT'));
    const reopened = OutputFolder.open(dir);

    expect(reopened.isDone('file_empty')).toBe(true);
    expect(reopened.isDone('file_slow')).toBe(false);
    expect(reopened.isDone('file_empty', true)).toBe(false);
  });

  it('lets a success follow a failure of the same key, but never a second failure or a second success', () => {
    const out = OutputFolder.open(dir);

    expect(out.write(failed('a-1', 'URL_TIMEOUT'))).toBe(true);
    expect(out.write(failed('a-1', 'URL_TIMEOUT'))).toBe(false);
    expect(out.write(result('a-1', 1))).toBe(true);
    expect(out.write(result('a-1', 1))).toBe(false);
    expect(OutputFolder.open(dir).isDone('file_a-1')).toBe(true);
    expect(lines(join(dir, 'a.json'))).toHaveLength(1);
  });
});

describe('OutputFolder writer lock', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'facefleet-out-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a folder held by another live process on this host', () => {
    writeFileSync(join(dir, '.facefleet.lock'), `${process.ppid}@${hostname()}`);

    expect(() => OutputFolder.open(dir)).toThrow(FolderBusyError);
  });

  it('takes over the lock of a process that is gone, and gives it back on close', () => {
    writeFileSync(join(dir, '.facefleet.lock'), `999999999@${hostname()}`);

    const out = OutputFolder.open(dir);
    expect(readFileSync(join(dir, '.facefleet.lock'), 'utf8')).toBe(`${process.pid}@${hostname()}`);
    out.close();
    expect(existsSync(join(dir, '.facefleet.lock'))).toBe(false);
  });
});
