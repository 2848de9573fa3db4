export * from './errors.js';
export * from './records.js';
export * from './job.js';
export * from './groups.js';
export * from './queues.js';
export * from './settings.js';
