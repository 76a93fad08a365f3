#!/usr/bin/env node
// The entry point of holdfast before 0.1: kept so that archive_command and restore_command
// settings written by earlier versions keep working. It runs bin/holdfast.cjs, the entry point
// (CommonJS: a WAL call then starts without Node's ES-module loader).
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./holdfast.cjs');
