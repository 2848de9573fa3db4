import tseslint from 'typescript-eslint';

/**
 * Type-aware lint for the sources: promises that nobody awaits or handles are the bugs that
 * lose jobs silently in a queue system, so they are errors here.
 */
export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      'node_modules/**',
      'models/**',
      'scripts/**',
      'test/**',
      'vitest.config.ts',
      'eslint.config.js',
      'apps/cli/bin/**',
    ],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-console': ['error', { allow: ['log', 'info'] }],
    },
  },
);
