export * from './config.js';
export * from './errors.js';
export * from './fleet.js';
export * from './server.js';
export * from './files.js';
