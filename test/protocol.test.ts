import { describe, expect, it } from 'vitest';
import {
  FaceRecordSchema,
  groupOf,
  idFromPath,
  ImageStatusSchema,
  jobKey,
  JobSchema,
} from '@facefleet/protocol';

describe('groupOf', () => {
  it('drops a trailing -<digits> frame number: one file per broadcast', () => {
    expect(groupOf('RUSSIA24_20230306_123000_RIK_Rossiya_24-000382')).toBe(
      'RUSSIA24_20230306_123000_RIK_Rossiya_24',
    );
  });

  it('sends ids without a frame number to faces', () => {
    expect(groupOf('obama')).toBe('faces');
    expect(groupOf(42)).toBe('faces');
    expect(groupOf('frame-12a')).toBe('faces');
  });

  it('takes the first capture group of a --group pattern, or the whole match', () => {
    expect(groupOf('CNN_2023-01-02_0100-17', /^([A-Z]+)_/)).toBe('CNN');
    expect(groupOf('CNN_2023-01-02_0100-17', /\d{4}-\d{2}-\d{2}/)).toBe('2023-01-02');
    expect(groupOf('nomatch', /^\d+$/)).toBe('faces');
  });

  it('never names a file outside the output folder', () => {
    expect(groupOf('../../etc/passwd-1')).not.toContain('/');
    expect(groupOf('..-1')).not.toMatch(/^\./);
  });
});

describe('idFromPath', () => {
  it('is the file name without directory and extension', () => {
    expect(idFromPath('/a/b/RUSSIA24-000382.jpg')).toBe('RUSSIA24-000382');
    expect(idFromPath('x/.hidden')).toBe('.hidden');
  });
});

describe('JobSchema', () => {
  it('takes an id with exactly one of url, file or data', () => {
    expect(JobSchema.safeParse({ id: 'a', file: '/x.jpg' }).success).toBe(true);
    expect(JobSchema.safeParse({ id: 7, url: 'http://h/x.jpg' }).success).toBe(true);
    expect(JobSchema.safeParse({ id: 'a' }).success).toBe(false);
    expect(JobSchema.safeParse({ id: 'a', file: '/x', data: 'AAAA' }).success).toBe(false);
    expect(JobSchema.safeParse({ id: 'a', file: '/x', extra: 1 }).success).toBe(false);
  });
});

describe('jobKey', () => {
  it('is the same for the same source and differs by kind and value, without ":"', () => {
    expect(jobKey({ file: '/a.jpg' })).toBe(jobKey({ file: '/a.jpg' }));
    expect(jobKey({ file: '/a.jpg' })).not.toBe(jobKey({ url: '/a.jpg' }));
    expect(jobKey({ data: 'AAAA' })).toMatch(/^data_[0-9a-f]{32}$/);
  });
});

describe('the wire format', () => {
  it('accepts the seed server face record and nothing looser', () => {
    const record = { id: 'x', bbox: [1, 2, 3, 4], embed: Array.from({ length: 128 }, () => 0.1) };
    expect(FaceRecordSchema.safeParse(record).success).toBe(true);
    expect(FaceRecordSchema.safeParse({ ...record, embed: [0.1] }).success).toBe(false);
    expect(FaceRecordSchema.safeParse({ ...record, bbox: [1.5, 2, 3, 4] }).success).toBe(false);
  });

  it('requires a registered error code on a status', () => {
    const status = {
      id: 'x',
      status: 'failed',
      faces: 0,
      error: { code: 'IMAGE_EMPTY', message: 'm' },
    };
    expect(ImageStatusSchema.safeParse(status).success).toBe(true);
    expect(
      ImageStatusSchema.safeParse({ ...status, error: { code: 'NOPE', message: 'm' } }).success,
    ).toBe(false);
  });
});
