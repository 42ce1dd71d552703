// Validate an AsyncAPI document with the official parser (@asyncapi/parser).
//
//   node validate.mjs FILE
//
// Prints every diagnostic as "severity path: message (rule)" on stderr; exits 1 when any has severity
// error (or the parser produced no document), 2 on a usage or read error, 0 otherwise.
// Used by tests/integration/test_asyncapi.py; install with `npm ci --prefix tests/tools/asyncapi`.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";

import parserPackage from "@asyncapi/parser";

const { Parser, DiagnosticSeverity } = parserPackage;
const SEVERITY_NAMES = { 0: "error", 1: "warning", 2: "info", 3: "hint" };

async function main(argv) {
  if (argv.length !== 1) {
    console.error("usage: node validate.mjs FILE");
    return 2;
  }
  const file = resolve(argv[0]);
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    return 2;
  }
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, { source: file });
  let errors = 0;
  for (const diagnostic of diagnostics) {
    const severity = SEVERITY_NAMES[diagnostic.severity] ?? String(diagnostic.severity);
    const path = (diagnostic.path ?? []).join("/") || "$";
    console.error(`${severity} ${path}: ${diagnostic.message} (${diagnostic.code})`);
    if (diagnostic.severity === DiagnosticSeverity.Error) {
      errors += 1;
    }
  }
  if (document === undefined && errors === 0) {
    console.error("error $: the parser produced no document");
    errors = 1;
  }
  if (errors > 0) {
    console.error(`${file}: ${errors} error(s)`);
    return 1;
  }
  console.log(`${file}: valid AsyncAPI ${document.version()}`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
