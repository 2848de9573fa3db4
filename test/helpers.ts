import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The shared corpus lives beside the checkout (`../shared/testdata`), in CI as on a developer's machine. */
export const TESTDATA = process.env.FACEFLEET_TESTDATA ?? resolve(REPO, '..', 'shared', 'testdata');

export const CLI = join(REPO, 'apps', 'cli', 'bin', 'facefleet.js');

export function data(relative: string): string {
  return join(TESTDATA, relative);
}

export function readJson<T>(relative: string): T {
  return JSON.parse(readFileSync(data(relative), 'utf8')) as T;
}

export function distance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i += 1) sum += ((a[i] ?? 0) - (b[i] ?? 0)) ** 2;
  return Math.sqrt(sum);
}

/** Intersection over union of two [top, right, bottom, left] boxes. */
export function iou(a: readonly number[], b: readonly number[]): number {
  const [at, ar, ab, al] = a as [number, number, number, number];
  const [bt, br, bb, bl] = b as [number, number, number, number];
  const w = Math.max(0, Math.min(ar, br) - Math.max(al, bl));
  const h = Math.max(0, Math.min(ab, bb) - Math.max(at, bt));
  const inter = w * h;
  return inter / ((ar - al) * (ab - at) + (br - bl) * (bb - bt) - inter);
}
