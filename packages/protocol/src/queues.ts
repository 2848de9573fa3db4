/** BullMQ queue names shared by producers, workers, the sink and the API. */
export const QUEUES = {
  jobs: 'faces',
  /**
   * Jobs whose caller waits for the answer (`POST /faceembed`): workers take them before any bulk
   * job, first come first served among themselves.
   */
  live: 'faces-live',
  results: 'faces-results',
} as const;
