#!/usr/bin/env node
// Entry for the installed `edgeway` command: runs the TypeScript CLI through tsx, so no build step is needed on the board.
import { register } from 'tsx/esm/api'
register()
await import('../gateway/cli.ts')
