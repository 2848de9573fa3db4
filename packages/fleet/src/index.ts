export * from './output-folder.js';
