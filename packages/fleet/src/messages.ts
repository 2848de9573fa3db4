import { z } from 'zod';
import { FaceRecordSchema, ImageResultSchema, ImageStatusSchema } from '@facefleet/protocol';

/**
 * What crosses Redis, validated on both sides. A jobs-queue job's data is a Job (JobSchema; its
 * BullMQ id is the job key); a results-queue job's data is an image's result plus its group.
 */

export const PublishedResultSchema = z
  .object({
    key: z.string().min(1),
    group: z.string().min(1).optional(),
    result: ImageResultSchema,
  })
  .strict();
export type PublishedResult = z.infer<typeof PublishedResultSchema>;

/**
 * What a finished jobs-queue job returns: the status, the processing time, and the face records
 * only when the job asked for them (records otherwise travel on the results queue alone).
 */
export const JobReturnSchema = z.object({
  status: ImageStatusSchema,
  ms: z.number().nonnegative(),
  records: z.array(FaceRecordSchema).optional(),
});
export type JobReturn = z.infer<typeof JobReturnSchema>;
