// call.test.ts proves a call between two real browsers: headless Chromium
// with a fake camera and microphone, two separate browser contexts running
// the call page, against a real `parley serve` (the built binary, serving the
// page from PARLEY_WEB_DIR) on a fresh PostgreSQL database. Each page must
// decode the other's video and receive its audio, then the call is hung up
// and must be ENDED.
//
// Built by build.mjs into test/dist/ and run with `node --test test/dist/`
// (scripts/browser-test.sh does both). Settings: PARLEY_BIN (default
// bin/parley), PARLEY_TEST_DATABASE_URL (as for the Go tests), CHROMIUM
// (default /usr/bin/chromium).

import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium, type Browser, type Page } from "playwright-core";

import { Api } from "../src/api.js";
import type { CallStats } from "../src/call.js";
import { CallState } from "../../gen/es/parley/v1/calls_pb.js";
import { CallKind } from "../../gen/es/parley/v1/types_pb.js";
import { FriendRequestDecision, FriendRequestDirection } from "../../gen/es/parley/v1/contacts_pb.js";

const run = promisify(execFile);
const webDir = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const repo = resolve(webDir, "..");
const accessTokenTTLSeconds = 2;
// tokenLeewaySeconds is the clock skew a node forgives an expired token
// (server/authn.go).
const tokenLeewaySeconds = 5;
const parleyBin = process.env.PARLEY_BIN ?? join(repo, "bin", "parley");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const localURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/** How long each page has to decode the other's video and hear its audio. */
const mediaDeadlineMs = 20_000;

/** Database is a fresh database for one run, dropped afterwards. */
interface Database {
  /** url is the database's URL; empty means parley starts its embedded server. */
  url: string;
  drop(): Promise<void>;
}

/**
 * freshDatabase creates a database with a unique name on the server the Go
 * tests use: PARLEY_TEST_DATABASE_URL, else 127.0.0.1:5432 when it answers.
 * With neither, parley serve runs its embedded PostgreSQL in a temporary
 * directory instead.
 */
async function freshDatabase(): Promise<Database> {
  let admin = process.env.PARLEY_TEST_DATABASE_URL ?? "";
  if (admin === "") {
    try {
      await run("psql", [localURL, "-Atqc", "SELECT 1"], { timeout: 5_000 });
      admin = localURL;
    } catch {
      return { url: "", drop: async () => {} };
    }
  }
  const name = `parley_browser_${process.pid}_${Date.now()}`;
  await run("psql", [admin, "-qc", `CREATE DATABASE ${name}`]);
  const u = new URL(admin);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      await run("psql", [admin, "-qc", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
    },
  };
}

/** Server is a running `parley serve`. */
interface Server {
  url: string;
  proc: ChildProcess;
  logs: string[];
  stop(): Promise<void>;
}

async function startParley(db: Database, dataDir: string): Promise<Server> {
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PARLEY_ADDR: "127.0.0.1:0",
    PARLEY_DATABASE_URL: db.url,
    PARLEY_DATA_DIR: dataDir,
    PARLEY_WEB_DIR: join(webDir, "dist"),
    // Call media on one UDP socket on loopback, advertised as such: the
    // browsers are on this machine.
    PARLEY_RTC_UDP_ADDR: "127.0.0.1:0",
    PARLEY_RTC_LOOPBACK: "true",
    PARLEY_LOG_FORMAT: "json",
    // Short-lived access tokens, so that the pages and the test's clients
    // renew theirs (Refresh) several times during the call.
    PARLEY_ACCESS_TOKEN_TTL: `${accessTokenTTLSeconds}s`,
  };
  const proc = spawn(parleyBin, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const logs: string[] = [];
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`parley serve did not start in 60 s:\n${logs.join("\n")}`)), 60_000);
    let buf = "";
    const onData = (chunk: Buffer) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        try {
          const rec = JSON.parse(line) as { msg?: string; addr?: string };
          if (rec.msg === "parley serving" && rec.addr !== undefined) {
            clearTimeout(timer);
            ok(`http://${rec.addr}`);
          }
        } catch {
          // not a log record
        }
      }
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    proc.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`parley serve exited with ${code}:\n${logs.join("\n")}`));
    });
  });
  return {
    url,
    proc,
    logs,
    stop: () =>
      new Promise<void>((ok) => {
        if (proc.exitCode !== null) {
          ok();
          return;
        }
        proc.once("exit", () => ok());
        proc.kill("SIGTERM");
      }),
  };
}

/** User is an account the test made, signed in from Node. */
interface User {
  username: string;
  password: string;
  api: Api;
  id: string;
}

async function newUser(serverURL: string, prefix: string): Promise<User> {
  const username = `${prefix}_${Math.random().toString(36).slice(2, 10)}`;
  const password = "correct horse battery";
  const api = new Api(serverURL);
  const me = await api.login(username, password, { register: true, deviceName: "browser test" });
  return { username, password, api, id: me.id };
}

/** befriend makes a and b contacts: a asks, b accepts. */
async function befriend(a: User, b: User): Promise<void> {
  await a.api.contacts.sendFriendRequest({ userId: b.id, greeting: "call me" });
  const { friendRequests } = await b.api.contacts.listFriendRequests({ direction: FriendRequestDirection.INCOMING });
  const req = friendRequests.find((r) => r.fromUser?.id === a.id);
  assert.ok(req, `${b.username} has no friend request from ${a.username}, only from ${friendRequests.map((r) => r.fromUser?.username)}`);
  await b.api.contacts.respondFriendRequest({ requestId: req.id, decision: FriendRequestDecision.ACCEPT });
}

function callPage(server: Server, u: User, target: Record<string, string>): string {
  const q = new URLSearchParams({ username: u.username, password: u.password, ...target });
  return `${server.url}/?${q}`;
}

/** waitFor polls check until it returns a value or the deadline passes. */
async function waitFor<T>(what: string, ms: number, check: () => Promise<T | undefined>, detail: () => Promise<string>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) {
      return v;
    }
    if (Date.now() > end) {
      throw new Error(`${what} within ${ms} ms; ${await detail()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const hook = {
  state: (p: Page) => p.evaluate(() => ({ state: window.parley.state, error: window.parley.error, callId: window.parley.callId })),
  stats: (p: Page) => p.evaluate(() => window.parley.stats()),
};

function hasMedia(s: CallStats | undefined): boolean {
  return (
    s !== undefined &&
    s.inbound.video.framesDecoded > 0 &&
    s.inbound.audio.packetsReceived > 0 &&
    s.inbound.audio.totalSamplesReceived > 0
  );
}

let db: Database;
let dataDir: string;
let server: Server;
let browser: Browser;
const consoles: string[] = [];

before(async () => {
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: install it (scripts/ensure-packages.sh chromium, or apt-get install chromium)`);
  assert.ok(existsSync(parleyBin), `no parley binary at ${parleyBin}: run make build`);
  assert.ok(existsSync(join(webDir, "dist", "index.html")), "web/dist is not built: run npm run build in web/");
  dataDir = await mkdtemp(join(tmpdir(), "parley-browser-"));
  db = await freshDatabase();
  server = await startParley(db, dataDir);
  // Should this process die before after() runs, the server goes with it.
  process.once("exit", () => server.proc.kill("SIGKILL"));
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      // Real addresses in ICE candidates, loopback among them: Parley's
      // media server cannot resolve mDNS names and listens on 127.0.0.1.
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--allow-loopback-in-peer-connection",
      // Remote audio plays without a click, so it is decoded.
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await db?.drop();
  if (dataDir !== undefined) {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test("two browsers in a video call decode each other's video and receive each other's audio", async (t) => {
  const started = Date.now();
  const alice = await newUser(server.url, "alice");
  const bob = await newUser(server.url, "bob");
  await befriend(alice, bob);
  const conv = await alice.api.messages.createDirectConversation({ userId: bob.id });
  const conversationId = conv.conversation?.id ?? "";
  assert.notEqual(conversationId, "");

  const pages: Record<string, Page> = {};
  for (const who of ["alice", "bob"]) {
    const ctx = await browser.newContext(); // separate cookies, storage and devices
    const page = await ctx.newPage();
    page.on("console", (m) => consoles.push(`${who} console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => consoles.push(`${who} page error: ${e.message}`));
    pages[who] = page;
  }
  const detail = async () => {
    const out: string[] = [];
    for (const [who, p] of Object.entries(pages)) {
      out.push(`${who}: ${JSON.stringify(await hook.state(p))} ${JSON.stringify(await hook.stats(p))}`);
      out.push(`${who} log:\n${await p.locator("#log").textContent()}`);
    }
    return `${out.join("\n")}\n${consoles.join("\n")}\nserver:\n${server.logs.slice(-40).join("\n")}`;
  };

  // Alice calls from her page; Bob's page answers the call she started.
  await pages.alice.goto(callPage(server, alice, { conversation: conversationId, kind: "video" }));
  const callId = await waitFor(
    "alice's page started no call",
    15_000,
    async () => {
      const s = await hook.state(pages.alice);
      assert.notEqual(s.state, "failed", `alice's page failed: ${s.error}`);
      return s.state === "in-call" ? s.callId : undefined;
    },
    detail,
  );
  const ringing = await bob.api.calls.getCall({ callId });
  assert.equal(ringing.call?.state, CallState.RINGING);
  assert.equal(ringing.call?.kind, CallKind.VIDEO);
  await pages.bob.goto(callPage(server, bob, { call: callId }));

  const stats = await waitFor(
    "the pages did not both get the other's video and audio",
    mediaDeadlineMs,
    async () => {
      const both: Record<string, CallStats> = {};
      for (const [who, p] of Object.entries(pages)) {
        const s = await hook.state(p);
        assert.notEqual(s.state, "failed", `${who}'s page failed: ${s.error}`);
        const st = await hook.stats(p);
        if (!hasMedia(st)) {
          return undefined;
        }
        both[who] = st as CallStats;
      }
      return both;
    },
    detail,
  );
  const mediaMs = Date.now() - started;
  for (const [who, s] of Object.entries(stats)) {
    t.diagnostic(
      `${who}: video framesDecoded=${s.inbound.video.framesDecoded} packetsReceived=${s.inbound.video.packetsReceived}; ` +
        `audio packetsReceived=${s.inbound.audio.packetsReceived} totalSamplesReceived=${s.inbound.audio.totalSamplesReceived}; ` +
        `sent video=${s.outbound.video.packetsSent} audio=${s.outbound.audio.packetsSent}; route ${s.route?.local} → ${s.route?.remote}`,
    );
    // The media server is on loopback and says so (PARLEY_RTC_LOOPBACK).
    assert.match(s.route?.remote ?? "", /^127\.0\.0\.1:\d+$/, `${who}'s media route`);
  }
  t.diagnostic(`media both ways ${mediaMs} ms after the accounts were made`);

  // Each page shows the other's camera and microphone, labelled by source.
  for (const [who, other] of [["alice", bob], ["bob", alice]] as const) {
    const tracks = await pages[who].evaluate(() => window.parley.remoteTracks());
    const got = tracks.map((r) => `${r.userId}/${r.source}/${r.kind}`).sort();
    assert.deepEqual(got, [`${other.id}/CAMERA/video`, `${other.id}/MICROPHONE/audio`], `${who}'s remote tracks`);
    assert.equal(await pages[who].locator(`figure[data-user="${other.id}"][data-source="camera"] video`).count(), 1);
    assert.equal(await pages[who].locator(`figure[data-user="${other.id}"][data-source="microphone"] audio`).count(), 1);
  }

  // Past the access tokens' lifetime (and the leeway), Alice mutes her
  // microphone: the page renewed its token, the mute reaches the server, and
  // Bob's page shows it.
  await new Promise((ok) => setTimeout(ok, (accessTokenTTLSeconds + tokenLeewaySeconds + 1) * 1000));
  await pages.alice.evaluate(() => window.parley.setMuted("MICROPHONE", true));
  await waitFor("bob's page did not see alice's microphone muted", 10_000, async () => {
    const tracks = await pages.bob.evaluate(() => window.parley.remoteTracks());
    return tracks.some((r) => r.userId === alice.id && r.source === "MICROPHONE" && r.muted) ? true : undefined;
  }, detail);

  // Alice's Signals stream drops: her page opens it again, she stays in the
  // call, and what she signals next still reaches Bob.
  await pages.alice.evaluate(() => window.parley.dropSignals());
  await waitFor("alice's page did not open Signals again", 10_000, async () =>
    (await pages.alice.evaluate(() => window.parley.reopened())) >= 1 ? true : undefined, detail);
  assert.equal((await hook.state(pages.alice)).state, "in-call", "alice's page after Signals dropped");
  await pages.alice.evaluate(() => window.parley.setMuted("MICROPHONE", false));
  await waitFor("bob's page did not see alice's microphone unmuted after her Signals came back", 10_000, async () => {
    const tracks = await pages.bob.evaluate(() => window.parley.remoteTracks());
    return tracks.some((r) => r.userId === alice.id && r.source === "MICROPHONE" && !r.muted) ? true : undefined;
  }, detail);

  // Alice hangs up: the call ends, and so do both pages' sessions.
  if (process.env.PARLEY_BROWSER_SCREENSHOTS) {
    for (const [who, p] of Object.entries(pages)) {
      await p.screenshot({ path: join(process.env.PARLEY_BROWSER_SCREENSHOTS, `${who}.png`), fullPage: true });
    }
  }
  await pages.alice.evaluate(() => window.parley.hangUp());
  const ended = await bob.api.calls.getCall({ callId });
  assert.equal(ended.call?.state, CallState.ENDED, `call state after hang-up: ${CallState[ended.call?.state ?? 0]}`);
  for (const [who, p] of Object.entries(pages)) {
    await waitFor(`${who}'s page did not see the call end`, 10_000, async () => ((await hook.state(p)).state === "ended" ? true : undefined), detail);
  }
  t.diagnostic(`whole test ${Date.now() - started} ms`);
});
