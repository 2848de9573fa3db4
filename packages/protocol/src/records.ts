import { z } from 'zod';
import { ERROR_CODES } from './errors.js';

/** An image id as the caller gave it: passed through untouched. */
export const ImageIdSchema = z.union([z.string().min(1).max(1024), z.number().finite()]);
export type ImageId = z.infer<typeof ImageIdSchema>;

/** [top, right, bottom, left] in integer pixels of the upright image, clamped to it. */
export const BBoxSchema = z.tuple([
  z.number().int(),
  z.number().int(),
  z.number().int(),
  z.number().int(),
]);
export type BBox = z.infer<typeof BBoxSchema>;

export const EMBEDDING_SIZE = 128;

/** One face, one JSON-NL line: the seed server's wire format. */
export const FaceRecordSchema = z.object({
  id: ImageIdSchema,
  bbox: BBoxSchema,
  embed: z.array(z.number().finite()).length(EMBEDDING_SIZE),
});
export type FaceRecord = z.infer<typeof FaceRecordSchema>;

export const ProblemSchema = z.object({
  code: z.enum(ERROR_CODES as [string, ...string[]]),
  message: z.string(),
});
export type Problem = z.infer<typeof ProblemSchema>;

/**
 * One line per image, kept apart from face records so that "no faces" can be told from "failed".
 * `key` is the job key (derived from the source), `source` the path or URL when there is one, and
 * `group` the output file (without `.json`) that holds this image's face records.
 */
export const ImageStatusSchema = z.object({
  id: ImageIdSchema,
  status: z.enum(['ok', 'no_faces', 'failed']),
  faces: z.number().int().nonnegative(),
  error: ProblemSchema.optional(),
  warnings: z.array(ProblemSchema).optional(),
  key: z.string().optional(),
  source: z.string().optional(),
  group: z.string().optional(),
});
export type ImageStatus = z.infer<typeof ImageStatusSchema>;

/** What processing one image gives: its status line and its face records (possibly none). */
export const ImageResultSchema = z.object({
  status: ImageStatusSchema,
  records: z.array(FaceRecordSchema),
});
export type ImageResult = z.infer<typeof ImageResultSchema>;
