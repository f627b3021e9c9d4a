#!/usr/bin/env node
// Entry point of the `asgd` command: the compiled CLI (npm run build writes dist/; `prepare` runs it on install).
import { main } from '../dist/cli/main.js';

process.exit(await main(process.argv.slice(2)));
