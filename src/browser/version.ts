/**
 * The tool name written in the metadata, as Node writes it (src/node/version.ts reads package.json; a browser
 * bundle cannot). test/browser-engine.test.ts checks that it equals the package's name and version.
 */
export const TOOL_VERSION = 'asgdiffusion 0.1.0';
