/** BullMQ queue names shared by producers, workers, the sink and the API. */
export const QUEUES = {
  jobs: 'faces',
  results: 'faces-results',
} as const;
