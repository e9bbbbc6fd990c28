// Starts fauxqs (SNS, SQS, S3 on one port) for the plantd integration tests,
// through its JS API rather than its command line: the CLI binds every
// interface and logs each request, we want loopback only and silence.
//
//   node tests/aws/fauxqs.js PORT      (0: any free port)
//
// Prints exactly one line, "ready PORT", on stdout once it listens; exits 0
// on SIGTERM or SIGINT after closing the server.
import { buildApp } from "fauxqs";

const arg = process.argv[2] ?? "0";
if (!/^[0-9]+$/.test(arg) || Number(arg) > 65535) {
  process.stderr.write(`fauxqs.js: bad port '${arg}'\n`);
  process.exit(2);
}

const app = buildApp({ logger: false });
let closing = false;

async function shutdown() {
  if (closing) return;
  closing = true;
  try {
    await app.close();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

try {
  await app.listen({ port: Number(arg), host: "127.0.0.1" });
} catch (err) {
  process.stderr.write(`fauxqs.js: cannot listen on 127.0.0.1:${arg}: ${err.message}\n`);
  process.exit(1);
}
const port = app.server.address().port;
process.stdout.write(`ready ${port}\n`);
