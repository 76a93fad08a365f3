declare const __HOLDFAST_VERSION__: string | undefined;

/** Set by the bundler from package.json; "dev" when running unbundled (tests of modules). */
export const VERSION: string = typeof __HOLDFAST_VERSION__ === 'string' ? __HOLDFAST_VERSION__ : 'dev';
