// `node --import ./exit-with-parent.mjs ...`: ends this process when its stdin closes, i.e.
// when the test process that spawned it (with a stdin pipe) is gone, so that no app
// instance or PDS outlives a crashed or interrupted test run.
process.stdin.on('data', () => undefined);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
