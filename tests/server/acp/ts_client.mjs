// `acpd acp` driven by the ACP TypeScript SDK's ClientSideConnection (@agentclientprotocol/sdk
// 1.9.0, which validates what it receives against the protocol's types).
//
//   node ts_client.mjs CONFIG_JSON
//
// CONFIG_JSON: {sdk: the SDK's package dir, agent: argv of `acpd acp`, acpd: argv of the acpd
// CLI (for `send`), cwd, env}. Runs the scenario below and prints one JSON object of what it
// saw; any failure is thrown (exit status 1, the reason on stderr).
import { execFile, spawn } from "node:child_process";
import { Readable, Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";

const cfg = JSON.parse(process.argv[2]);
const acp = await import(pathToFileURL(`${cfg.sdk}/dist/acp.js`).href);
const run = promisify(execFile);

class Recorder {
  constructor(answer = "allow") {
    this.answer = answer;
    this.updates = [];
    this.permissions = [];
    this.waiters = [];
  }
  async requestPermission(params) {
    this.permissions.push(params);
    return { outcome: { outcome: "selected", optionId: this.answer } };
  }
  async sessionUpdate(params) {
    this.updates.push(params);
    for (const wake of this.waiters.splice(0)) wake();
  }
  kinds() {
    return this.updates.map((u) => u.update.sessionUpdate);
  }
  text(kind = "agent_message_chunk") {
    return this.updates
      .filter((u) => u.update.sessionUpdate === kind)
      .map((u) => u.update.content.text)
      .join("");
  }
  async waitFor(check) {
    while (!check(this)) await new Promise((wake) => this.waiters.push(wake));
  }
}

const open = [];

async function connect(recorder) {
  const proc = spawn(cfg.agent[0], cfg.agent.slice(1), {
    stdio: ["pipe", "pipe", "inherit"],
    env: cfg.env,
  });
  const exited = new Promise((done) => proc.on("exit", (code) => done(code)));
  open.push(proc);
  const stream = acp.ndJsonStream(Writable.toWeb(proc.stdin), Readable.toWeb(proc.stdout));
  const conn = new acp.ClientSideConnection(() => recorder, stream);
  const init = await conn.initialize({ protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
  if (init.protocolVersion !== 1) throw new Error(`protocol ${init.protocolVersion}`);
  return { conn, proc, exited, init };
}

const text = (t) => [{ type: "text", text: t }];
const out = {};

// 1. new, prompt: streamed chunks, end_turn.
const a = new Recorder();
const A = await connect(a);
out.capabilities = A.init.agentCapabilities;
const sid = (await A.conn.newSession({ cwd: cfg.cwd, mcpServers: [] })).sessionId;
out.sessionId = sid;
out.first = (await A.conn.prompt({ sessionId: sid, prompt: text("hello from typescript") })).stopReason;
out.firstKinds = a.kinds();
out.firstText = a.text();

// 2. a permission, answered from this client.
out.permission = (await A.conn.prompt({ sessionId: sid, prompt: text("ask for permission") })).stopReason;
out.asked = a.permissions.map((p) => ({ title: p.toolCall.title, options: p.options.map((o) => o.optionId) }));
out.permissionText = a.text();

// 3. cancel a running prompt.
const slow = A.conn.prompt({ sessionId: sid, prompt: text("/slow 500") });
await a.waitFor((r) => r.text().endsWith("1 2 "));
await A.conn.cancel({ sessionId: sid });
out.cancelled = (await slow).stopReason;

// 4. a second client lists the sessions and loads this one.
const b = new Recorder();
const B = await connect(b);
out.listed = (await B.conn.listSessions({ cwd: cfg.cwd })).sessions.map((s) => s.sessionId);
await B.conn.loadSession({ sessionId: sid, cwd: cfg.cwd, mcpServers: [] });
out.loadedKinds = b.kinds();
out.loadedUser = b.text("user_message_chunk");
out.loadedText = b.text();

// 5. a turn started over the socket reaches the attached client.
const before = b.updates.length;
await run(cfg.acpd[0], [...cfg.acpd.slice(1), "send", sid, "typed in a terminal"], { env: cfg.env });
await b.waitFor((r) => r.text().endsWith("demo agent."));
const live = new Recorder();
live.updates = b.updates.slice(before);
out.liveUser = live.text("user_message_chunk");
out.liveText = live.text();

// 6. detach (end of stdin) and attach again: resume, prompt, close.
A.proc.stdin.end();
out.detachedExit = await A.exited;
const c = new Recorder();
const C = await connect(c);
await C.conn.resumeSession({ sessionId: sid, cwd: cfg.cwd });
out.resumedUpdates = c.updates.length;
out.again = (await C.conn.prompt({ sessionId: sid, prompt: text("/echo back") })).stopReason;
out.againText = c.text();
out.closed = await C.conn.closeSession({ sessionId: sid });

for (const proc of open) proc.stdin.end();
process.stdout.write(`${JSON.stringify(out)}\n`);
