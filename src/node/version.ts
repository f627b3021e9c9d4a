/** The package's name and version, read once from its package.json (one place for the version). */
import { readFileSync } from 'node:fs';

// src/node/version.ts and dist/node/version.js both sit two folders below the package root.
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };

export const PACKAGE_VERSION: string = pkg.version;
export const TOOL_VERSION = `${pkg.name} ${pkg.version}`;
