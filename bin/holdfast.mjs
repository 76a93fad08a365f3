#!/usr/bin/env node
import '../dist/holdfast.mjs';
