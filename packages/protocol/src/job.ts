import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ImageIdSchema } from './records.js';

export const JobOptionsSchema = z
  .object({
    /** SSD MobileNet v1 minimum score for a detection, 0..1. */
    minConfidence: z.number().min(0).max(1).optional(),
    /** Take the whole image as one aligned face chip: no detection. */
    aligned: z.boolean().optional(),
    /** Keep the face records in the finished job too, for callers that ask for them (the HTTP API). */
    returnRecords: z.boolean().optional(),
    /** Publish the result to the results queue (and so to the sink's files). Default true. */
    publish: z.boolean().optional(),
  })
  .strict();
export type JobOptions = z.infer<typeof JobOptionsSchema>;

/** Where an image's bytes come from: exactly one of a path, a URL or base64 data. */
export type ImageSource = { file: string } | { url: string } | { data: string };

export const JobSchema = z
  .object({
    id: ImageIdSchema,
    file: z.string().min(1).optional(),
    url: z
      .string()
      .min(1)
      .max(8192)
      .refine((url) => /^https?:\/\//i.test(url) && URL.canParse(url), {
        message: 'must be an http or https URL',
      })
      .optional(),
    data: z.string().min(1).optional(),
    group: z.string().min(1).max(200).optional(),
    options: JobOptionsSchema.optional(),
  })
  .strict()
  .refine((job) => [job.file, job.url, job.data].filter((s) => s !== undefined).length === 1, {
    message: 'exactly one of "url", "file" or "data" is required',
  });
export type Job = z.infer<typeof JobSchema>;

export function sourceOf(job: Job): ImageSource {
  if (job.file !== undefined) return { file: job.file };
  if (job.url !== undefined) return { url: job.url };
  return { data: job.data ?? '' };
}

/**
 * The job key, derived from the source so that the same image enqueued twice is one job:
 * `file_…` from the path, `url_…` from the URL, `data_…` from the content. The caller resolves a
 * path to an absolute one first. No `:` appears in a key (BullMQ refuses it in job ids).
 */
export function jobKey(source: ImageSource): string {
  const [kind, value] =
    'file' in source
      ? ['file', source.file]
      : 'url' in source
        ? ['url', source.url]
        : ['data', source.data];
  return `${kind}_${createHash('sha256').update(value).digest('hex').slice(0, 32)}`;
}

/**
 * The part of a status line that names the image: its id (or the key when the job has none
 * usable), the job key, and the path or URL it came from. The job may be unvalidated data.
 */
export function statusBase(
  job: Partial<Job>,
  key?: string,
): { id: string | number; key?: string; source?: string } {
  const id = typeof job.id === 'string' || typeof job.id === 'number' ? job.id : (key ?? '');
  const source =
    typeof job.file === 'string' ? job.file : typeof job.url === 'string' ? job.url : undefined;
  return { id, ...(key ? { key } : {}), ...(source ? { source } : {}) };
}
