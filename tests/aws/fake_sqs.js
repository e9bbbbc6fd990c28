// A fake SQS endpoint (JSON protocol) for the tests of bad answers: it
// answers what the test scripted, and otherwise like a small healthy SQS
// (in memory). Loopback only, no dependency.
//
//   node tests/aws/fake_sqs.js PORT      (0: any free port)
//
// Prints exactly one line, "ready PORT", once it listens; exits 0 on SIGTERM.
//
// Control (the test drives it with curl):
//   POST /_fake/script   a JSON array of steps, appended to the script. An
//                        SQS request takes the first step whose "action"
//                        matches its X-Amz-Target (AmazonSQS.ACTION), or
//                        that has no "action":
//     {"status": 500, "body": "...", "headers": {...}}  this answer as it is
//                        (nothing is enqueued)
//     {"kind": "partial", "code": "C", "message": "M", "sender_fault": b}
//                        SendMessageBatch: the FIRST entry fails with C/M,
//                        the others are enqueued
//     {"kind": "reset"}  the connection is destroyed without an answer
//     {"delay_ms": N, ...} wait N ms before answering; with "healthy": true
//                        the healthy answer (and its effects), late
//   GET /_fake/requests  [{"action", "status"}] in order
//   GET /_fake/accepted  the plantd.id attribute of every message enqueued,
//                        in order (duplicates included)
//   GET /_fake/script    the steps not used yet
//
// Healthy actions: CreateQueue, GetQueueUrl, GetQueueAttributes, SendMessage,
// SendMessageBatch, ReceiveMessage (waits up to min(WaitTimeSeconds, 2) s
// for a message), DeleteMessage, DeleteMessageBatch, ChangeMessageVisibility,
// ChangeMessageVisibilityBatch; anything else is 400 InvalidAction.
import http from "node:http";
import { randomUUID, createHash } from "node:crypto";

const arg = process.argv[2] ?? "0";
if (!/^[0-9]+$/.test(arg) || Number(arg) > 65535) {
  process.stderr.write(`fake_sqs.js: bad port '${arg}'\n`);
  process.exit(2);
}

const script = [];
const requests = [];
const accepted = [];
const queues = new Map(); // url -> {name, messages: [{id, body, attrs, receipt, visibleAt, receives}]}
let host = "127.0.0.1";

class SqsError extends Error {
  constructor(code, message, status = 400) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

const md5 = (s) => createHash("md5").update(s).digest("hex");

function queueOf(body) {
  const q = queues.get(body.QueueUrl);
  if (!q) throw new SqsError("QueueDoesNotExist", "The specified queue does not exist.");
  return q;
}

function enqueue(q, entry) {
  if (typeof entry.MessageBody !== "string" || entry.MessageBody === "") {
    throw new SqsError("MissingParameter", "The request must contain the parameter MessageBody.");
  }
  const m = {
    id: randomUUID(),
    body: entry.MessageBody,
    attrs: entry.MessageAttributes ?? {},
    receipt: null,
    visibleAt: 0,
    receives: 0,
  };
  q.messages.push(m);
  accepted.push(m.attrs["plantd.id"]?.StringValue ?? "");
  return m;
}

function checkEntries(entries) {
  if (!Array.isArray(entries) || entries.length === 0) {
    throw new SqsError("EmptyBatchRequest", "The batch request doesn't contain any entries.");
  }
  if (entries.length > 10) {
    throw new SqsError("TooManyEntriesInBatchRequest", "Maximum number of entries per request are 10.");
  }
  const ids = new Set();
  for (const e of entries) {
    if (!/^[A-Za-z0-9_-]{1,80}$/.test(e.Id ?? "")) {
      throw new SqsError("InvalidBatchEntryId", "A batch entry id can only contain alphanumeric characters, hyphens and underscores.");
    }
    if (ids.has(e.Id)) throw new SqsError("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.");
    ids.add(e.Id);
  }
}

function visible(q, now) {
  return q.messages.filter((m) => m.visibleAt <= now);
}

async function healthy(action, body, failFirst) {
  switch (action) {
    case "CreateQueue":
    case "GetQueueUrl": {
      const name = body.QueueName;
      if (!name) throw new SqsError("MissingParameter", "QueueName is required");
      const url = `http://${host}/000000000000/${name}`;
      if (!queues.has(url)) {
        if (action === "GetQueueUrl") throw new SqsError("QueueDoesNotExist", "The specified queue does not exist.");
        queues.set(url, { name, messages: [] });
      }
      return { QueueUrl: url };
    }
    case "GetQueueAttributes": {
      const q = queueOf(body);
      return { Attributes: { QueueArn: `arn:aws:sqs:us-east-1:000000000000:${q.name}`, ApproximateNumberOfMessages: String(q.messages.length) } };
    }
    case "SendMessage": {
      const m = enqueue(queueOf(body), body);
      return { MessageId: m.id, MD5OfMessageBody: md5(m.body) };
    }
    case "SendMessageBatch": {
      const q = queueOf(body);
      checkEntries(body.Entries);
      const Successful = [];
      const Failed = [];
      body.Entries.forEach((e, i) => {
        if (i === 0 && failFirst) {
          Failed.push({ Id: e.Id, SenderFault: !!failFirst.sender_fault, Code: failFirst.code, Message: failFirst.message ?? "" });
          return;
        }
        const m = enqueue(q, e);
        Successful.push({ Id: e.Id, MessageId: m.id, MD5OfMessageBody: md5(m.body) });
      });
      return { Successful, Failed };
    }
    case "ReceiveMessage": {
      const q = queueOf(body);
      const max = body.MaxNumberOfMessages ?? 1;
      const wait = Math.min(body.WaitTimeSeconds ?? 0, 2) * 1000;
      const until = Date.now() + wait;
      while (visible(q, Date.now()).length === 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const now = Date.now();
      const vis = (body.VisibilityTimeout ?? 30) * 1000;
      const got = visible(q, now).slice(0, max);
      for (const m of got) {
        m.receipt = randomUUID();
        m.visibleAt = now + vis;
        m.receives++;
      }
      if (got.length === 0) return {};
      return {
        Messages: got.map((m) => ({
          MessageId: m.id,
          ReceiptHandle: m.receipt,
          MD5OfBody: md5(m.body),
          Body: m.body,
          ...(Object.keys(m.attrs).length ? { MessageAttributes: m.attrs } : {}),
          Attributes: { ApproximateReceiveCount: String(m.receives) },
        })),
      };
    }
    case "DeleteMessage": {
      const q = queueOf(body);
      q.messages = q.messages.filter((m) => m.receipt !== body.ReceiptHandle);
      return {};
    }
    case "DeleteMessageBatch":
    case "ChangeMessageVisibilityBatch": {
      const q = queueOf(body);
      checkEntries(body.Entries);
      const Successful = [];
      const Failed = [];
      for (const e of body.Entries) {
        const m = q.messages.find((x) => x.receipt === e.ReceiptHandle);
        if (!m) {
          Failed.push({ Id: e.Id, SenderFault: true, Code: "ReceiptHandleIsInvalid", Message: "The input receipt handle is invalid." });
          continue;
        }
        if (action === "DeleteMessageBatch") q.messages = q.messages.filter((x) => x !== m);
        else m.visibleAt = Date.now() + (e.VisibilityTimeout ?? 0) * 1000;
        Successful.push({ Id: e.Id });
      }
      return { Successful, Failed };
    }
    case "ChangeMessageVisibility": {
      const q = queueOf(body);
      const m = q.messages.find((x) => x.receipt === body.ReceiptHandle);
      if (!m) throw new SqsError("ReceiptHandleIsInvalid", "The input receipt handle is invalid.");
      m.visibleAt = Date.now() + (body.VisibilityTimeout ?? 0) * 1000;
      return {};
    }
    default:
      throw new SqsError("InvalidAction", `Unknown action: ${action}`);
  }
}

function takeStep(action) {
  const i = script.findIndex((s) => !s.action || s.action === action);
  return i < 0 ? null : script.splice(i, 1)[0];
}

async function answer(req, res, text) {
  const action = String(req.headers["x-amz-target"] ?? "").replace(/^AmazonSQS\./, "");
  const rec = { action, status: 0 };
  requests.push(rec);
  host = req.headers.host ?? host;
  const step = takeStep(action);
  if (step && step.kind === "reset") {
    rec.status = -1;
    req.socket.destroy();
    return;
  }
  let status = 200;
  let out;
  let headers = { "content-type": "application/x-amz-json-1.0" };
  if (step && step.status !== undefined && !step.healthy) {
    status = step.status;
    out = step.body ?? "";
    headers = { ...headers, ...(step.headers ?? {}) };
  } else {
    if (step && step.delay_ms) await new Promise((r) => setTimeout(r, step.delay_ms));
    try {
      if (!String(req.headers["content-type"] ?? "").includes("application/x-amz-json-1.0")) {
        throw new SqsError("InvalidAction", "not the SQS JSON protocol");
      }
      const body = JSON.parse(text || "{}");
      out = JSON.stringify(await healthy(action, body, step && step.kind === "partial" ? step : null));
    } catch (err) {
      status = err.status ?? 400;
      const code = err.code ?? "MalformedQueryString";
      out = JSON.stringify({ __type: `com.amazonaws.sqs#${code}`, message: String(err.message) });
      if (code === "QueueDoesNotExist") headers["x-amzn-query-error"] = "AWS.SimpleQueueService.NonExistentQueue;Sender";
    }
  }
  rec.status = status;
  const send = () => {
    if (res.destroyed) return;
    res.writeHead(status, { ...headers, "x-amzn-requestid": randomUUID() });
    res.end(out);
  };
  if (step && step.delay_ms && !step.healthy) setTimeout(send, step.delay_ms);
  else send();
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const json = (code, v) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    try {
      if (req.method === "POST" && req.url === "/_fake/script") {
        const steps = JSON.parse(body);
        if (!Array.isArray(steps)) throw new Error("the script is a JSON array");
        script.push(...steps);
        json(200, { queued: script.length });
      } else if (req.method === "GET" && req.url === "/_fake/requests") {
        json(200, requests);
      } else if (req.method === "GET" && req.url === "/_fake/accepted") {
        json(200, accepted);
      } else if (req.method === "GET" && req.url === "/_fake/script") {
        json(200, script);
      } else if (req.method === "POST" && (req.url === "/" || req.url.startsWith("/?"))) {
        answer(req, res, body).catch((err) => {
          process.stderr.write(`fake_sqs.js: ${err.stack}\n`);
          if (!res.headersSent) json(500, { __type: "InternalError", message: String(err) });
        });
      } else {
        json(404, { error: `no route for ${req.method} ${req.url}` });
      }
    } catch (err) {
      json(400, { error: String(err.message ?? err) });
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
  process.stderr.write(`fake_sqs.js: cannot listen on 127.0.0.1:${arg}: ${err.message}\n`);
  process.exit(1);
});
server.listen(Number(arg), "127.0.0.1", () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
