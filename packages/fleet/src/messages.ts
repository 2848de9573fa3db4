import { z } from 'zod';
import { ImageResultSchema, JobSchema } from '@facefleet/protocol';

/**
 * What crosses Redis, validated on both sides. A jobs-queue job's data is a Job (its BullMQ id is
 * the job key); a results-queue job's data is an image's result plus the group it belongs to.
 */
export const QueuedJobSchema = JobSchema;

export const PublishedResultSchema = z
  .object({
    key: z.string().min(1),
    group: z.string().min(1).optional(),
    result: ImageResultSchema,
  })
  .strict();
export type PublishedResult = z.infer<typeof PublishedResultSchema>;

/** What a completed jobs-queue job returns: the status alone (records travel on the results queue). */
export type JobReturn = z.infer<typeof ImageResultSchema>['status'];
