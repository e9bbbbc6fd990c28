// A fake AWS endpoint for the tests of bad answers: it answers what the test
// scripted, then like a healthy SNS. Loopback only, no dependency.
//
//   node tests/aws/fake_aws.js PORT      (0: any free port)
//
// Prints exactly one line, "ready PORT", once it listens; exits 0 on SIGTERM.
//
// Control (the test drives it with curl):
//   POST /_fake/script   a JSON array of answers, appended to the script; each
//                        AWS request (a POST to /) takes the next one:
//     {"status": 500, "body": "...", "headers": {...}}   this answer as it is
//     {"kind": "partial", "code": "C", "message": "M", "sender_fault": false}
//                        a PublishBatch answer where the FIRST entry failed
//                        with C/M and the others succeeded
//     {"delay_ms": N, ...} wait N ms before answering (for timeouts)
//   GET /_fake/requests  [{"action", "status", "entries": [{"id", "message",
//                        "attributes": {NAME: VALUE}, "accepted": bool}]}]
//   GET /_fake/accepted  the plantd_id attributes of every entry answered as
//                        accepted, in order (duplicates included)
//
// With the script empty: SNS (form-encoded) CreateTopic, Publish, PublishBatch
// and Subscribe succeed; anything else is a 400 InvalidAction in the shape of
// its protocol.
import http from "node:http";
import { randomUUID } from "node:crypto";

const arg = process.argv[2] ?? "0";
if (!/^[0-9]+$/.test(arg) || Number(arg) > 65535) {
  process.stderr.write(`fake_aws.js: bad port '${arg}'\n`);
  process.exit(2);
}

const XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/";
const script = [];
const requests = [];
const accepted = [];

function esc(s) {
  return String(s)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

function snsOk(action, inner) {
  return `<${action}Response xmlns="${XMLNS}"><${action}Result>${inner}</${action}Result>` +
    `<ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata></${action}Response>`;
}

function snsError(code, message) {
  return `<ErrorResponse xmlns="${XMLNS}"><Error><Type>Sender</Type><Code>${esc(code)}</Code>` +
    `<Message>${esc(message)}</Message></Error><RequestId>${randomUUID()}</RequestId></ErrorResponse>`;
}

// PublishBatchRequestEntries.member.N.* -> [{id, message, attributes}]
function batchEntries(p) {
  const byIndex = new Map();
  for (const [k, v] of p) {
    const m = k.match(/^PublishBatchRequestEntries\.member\.(\d+)\.(.*)$/);
    if (!m) continue;
    const e = byIndex.get(m[1]) ?? { attrNames: {}, attrValues: {} };
    byIndex.set(m[1], e);
    const a = m[2].match(/^MessageAttributes\.entry\.(\d+)\.(Name|Value\.StringValue)$/);
    if (m[2] === "Id") e.id = v;
    else if (m[2] === "Message") e.message = v;
    else if (a && a[2] === "Name") e.attrNames[a[1]] = v;
    else if (a) e.attrValues[a[1]] = v;
  }
  return [...byIndex.entries()]
    .sort((x, y) => Number(x[0]) - Number(y[0]))
    .map(([, e]) => {
      const attributes = {};
      for (const [i, name] of Object.entries(e.attrNames)) attributes[name] = e.attrValues[i];
      return { id: e.id, message: e.message, attributes };
    });
}

// The healthy answer to an SNS request; marks accepted entries.
function healthy(action, p, rec, failFirst) {
  switch (action) {
    case "CreateTopic":
      return [200, snsOk(action, `<TopicArn>arn:aws:sns:us-east-1:000000000000:${esc(p.get("Name"))}</TopicArn>`)];
    case "Subscribe":
      return [200, snsOk(action, `<SubscriptionArn>${esc(p.get("TopicArn"))}:${randomUUID()}</SubscriptionArn>`)];
    case "Publish": {
      const e = { id: "", message: p.get("Message"), attributes: {}, accepted: true };
      rec.entries.push(e);
      return [200, snsOk(action, `<MessageId>${randomUUID()}</MessageId>`)];
    }
    case "PublishBatch": {
      let ok = "";
      let bad = "";
      batchEntries(p).forEach((e, i) => {
        if (i === 0 && failFirst) {
          bad += `<member><Id>${esc(e.id)}</Id><Code>${esc(failFirst.code)}</Code>` +
            `<Message>${esc(failFirst.message ?? "")}</Message>` +
            `<SenderFault>${failFirst.sender_fault ? "true" : "false"}</SenderFault></member>`;
          rec.entries.push({ ...e, accepted: false });
        } else {
          ok += `<member><Id>${esc(e.id)}</Id><MessageId>${randomUUID()}</MessageId></member>`;
          rec.entries.push({ ...e, accepted: true });
        }
      });
      return [200, snsOk(action, `<Successful>${ok}</Successful><Failed>${bad}</Failed>`)];
    }
    default:
      return [400, snsError("InvalidAction", `Unknown action: ${action}`)];
  }
}

function answer(req, res, body) {
  const ct = req.headers["content-type"] ?? "";
  const rec = { action: "", status: 0, entries: [] };
  let json = false;
  let params = new URLSearchParams();
  if (ct.includes("x-amz-json")) {
    json = true;
    rec.action = String(req.headers["x-amz-target"] ?? "").replace(/^.*\./, "");
  } else {
    params = new URLSearchParams(body);
    rec.action = params.get("Action") ?? "";
  }
  requests.push(rec);
  const step = script.shift();
  let status;
  let text;
  let headers = { "content-type": json ? "application/x-amz-json-1.0" : "text/xml" };
  if (step && step.kind === "partial") {
    [status, text] = healthy(rec.action, params, rec, step);
  } else if (step && step.status !== undefined) {
    status = step.status;
    text = step.body ?? "";
    headers = { ...headers, ...(step.headers ?? {}) };
    if (rec.action === "PublishBatch") {
      rec.entries = batchEntries(params).map((e) => ({ ...e, accepted: false }));
    }
  } else if (json) {
    status = 400;
    text = JSON.stringify({ __type: "com.amazonaws.sqs#InvalidAction", message: `Unknown action: ${rec.action}` });
  } else {
    [status, text] = healthy(rec.action, params, rec, null);
  }
  for (const e of rec.entries) {
    if (e.accepted) accepted.push(e.attributes.plantd_id ?? "");
  }
  rec.status = status;
  const send = () => {
    res.writeHead(status, { ...headers, "x-amzn-requestid": randomUUID() });
    res.end(text);
  };
  if (step && step.delay_ms) setTimeout(send, step.delay_ms);
  else send();
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    try {
      if (req.method === "POST" && req.url === "/_fake/script") {
        const steps = JSON.parse(body);
        if (!Array.isArray(steps)) throw new Error("the script is a JSON array");
        script.push(...steps);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ queued: script.length }));
      } else if (req.method === "GET" && req.url === "/_fake/requests") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(requests));
      } else if (req.method === "GET" && req.url === "/_fake/accepted") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(accepted));
      } else if (req.method === "POST" && (req.url === "/" || req.url.startsWith("/?"))) {
        answer(req, res, body);
      } else {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: `no route for ${req.method} ${req.url}` }));
      }
    } catch (err) {
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: String(err.message ?? err) }));
    }
  });
});

function shutdown() {
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

server.on("error", (err) => {
  process.stderr.write(`fake_aws.js: cannot listen on 127.0.0.1:${arg}: ${err.message}\n`);
  process.exit(1);
});
server.listen(Number(arg), "127.0.0.1", () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
