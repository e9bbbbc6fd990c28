// A fault injector for the store_dynamodb tests: an HTTP proxy on
// 127.0.0.1 in front of a DynamoDB-protocol server (dynalite), which answers
// chosen requests itself the way a troubled DynamoDB (or something in the
// way) does. Node's standard library only.
//
//   node fault_proxy.cjs UPSTREAM_URL   prints "ready PORT" once listening
//
// Control, on the same port:
//   POST /__faults {"op": "PutItem", "mode": "throttle", "count": 2}
//        the next `count` requests for `op` (X-Amz-Target's operation, or
//        "*" for any) get the fault instead of reaching the upstream
//   GET  /__faults  {"served": {MODE: N, ...}, "pending": [...], "forwarded": N}
//
// Modes: throttle (400 ThrottlingException), provisioned (400
// ProvisionedThroughputExceededException), 500 (InternalServerError),
// html502 (a proxy's HTML page), malformed (200, not JSON), unrelated (200,
// someone else's JSON), creds (400 UnrecognizedClientException), drop (the
// connection closed without an answer).
'use strict';
const http = require('http');

const upstream = new URL(process.argv[2] || 'http://127.0.0.1:4567');
const pending = []; // {op, mode, count}
const served = {};
let forwarded = 0;

const ddbError = (type, message) =>
  JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${type}`, message });

function fault(mode, res) {
  served[mode] = (served[mode] || 0) + 1;
  const json = { 'Content-Type': 'application/x-amz-json-1.0' };
  switch (mode) {
    case 'throttle':
      res.writeHead(400, json);
      return res.end(ddbError('ThrottlingException', 'Rate of requests exceeds the allowed throughput.'));
    case 'provisioned':
      res.writeHead(400, json);
      return res.end(ddbError('ProvisionedThroughputExceededException',
        'The level of configured provisioned throughput for the table was exceeded.'));
    case '500':
      res.writeHead(500, json);
      return res.end(ddbError('InternalServerError', 'Internal server error'));
    case 'html502':
      res.writeHead(502, { 'Content-Type': 'text/html' });
      return res.end('<html><body><h1>502 Bad Gateway</h1></body></html>');
    case 'malformed':
      res.writeHead(200, json);
      return res.end('{"Item": {"pk": ');
    case 'unrelated':
      res.writeHead(200, json);
      return res.end('{"QueueUrl":"http://127.0.0.1/000000000000/q1"}');
    case 'creds':
      res.writeHead(400, json);
      return res.end(JSON.stringify({
        __type: 'com.amazon.coral.service#UnrecognizedClientException',
        message: 'The security token included in the request is invalid.',
      }));
    case 'drop':
    default:
      return res.socket.destroy();
  }
}

function take(op) {
  const i = pending.findIndex((p) => p.count > 0 && (p.op === op || p.op === '*'));
  if (i < 0) return null;
  const p = pending[i];
  if (--p.count === 0) pending.splice(i, 1);
  return p.mode;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (req.url === '/__faults') {
      if (req.method === 'POST') {
        const f = JSON.parse(body.toString() || '{}');
        pending.push({ op: f.op || '*', mode: f.mode, count: f.count || 1 });
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ served, pending, forwarded }));
    }
    const target = String(req.headers['x-amz-target'] || '');
    const mode = take(target.replace(/^.*\./, ''));
    if (mode) return fault(mode, res);
    forwarded++;
    const headers = { ...req.headers, host: upstream.host };
    const up = http.request({
      host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers,
    }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.socket.destroy());
    up.end(body);
  });
});

server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`));
