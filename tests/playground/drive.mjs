// Drives the playground page in headless Chromium like a person with a microphone.
//
//   node tests/playground/drive.mjs --url URL --wav FILE --chromium BIN --out DIR
//                                   [--scenario echo|speaks|two]
//
// Chromium's fake microphone plays FILE (looping). Scenario `echo` (the bundled
// echo agent): the person talks with the microphone on, pauses by turning it off,
// talks over the avatar by turning it on again, then ends the hosted session from
// the panel. Scenario `speaks` (any agent that says something on its own, e.g. a
// user's agent that greets): the person says a word, then listens; the avatar is
// seen and heard, until it goes quiet. Scenario `two` (two agents in the room, each
// with its avatar, each speaking now and then: two_agents.py): the page follows one
// agent and shows its own avatar, then the person picks the other in "following".
// Each step waits for a condition with a generous deadline; the report (JSON on
// stdout, also DIR/report.json) says what was seen, and the Python test judges
// it. A step whose condition never came ends the run with `failed` set.
// DIR/speaking.png is a screenshot taken while the avatar speaks.

import { writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { parseArgs } from "node:util";

const require = createRequire(new URL("../../web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    wav: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    out: { type: "string" },
    "talk-seconds": { type: "string", default: "3.5" },
    scenario: { type: "string", default: "echo" },
  },
});
if (!["echo", "speaks", "two"].includes(args.scenario)) {
  console.error(`drive.mjs: --scenario ${args.scenario}: use echo, speaks or two`);
  process.exit(2);
}
for (const name of ["url", "wav", "out"]) {
  if (!args[name]) {
    console.error(`drive.mjs: --${name} is required`);
    process.exit(2);
  }
}
mkdirSync(args.out, { recursive: true });

const SPEAKING_LEVEL = 0.02; // RMS of the avatar's audio counted as speech
const SILENT_LEVEL = 0.005;
const report = { steps: [], samples: [], failed: null, console: [] };

function step(name, data = {}) {
  report.steps.push({ name, at: Date.now(), ...data });
  console.error(`drive: ${name} ${JSON.stringify(data)}`);
}

async function until(page, what, predicate, timeoutMs, arg) {
  const started = Date.now();
  try {
    await page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 100 });
  } catch (error) {
    const snapshot = await page.evaluate(() => {
      const s = window.playground || {};
      return { ...s, transcript: s.transcript, events: (s.events || []).map((e) => e.text) };
    });
    throw new Error(`${what}: not within ${timeoutMs / 1000} s; page state: ${JSON.stringify(snapshot)}`);
  }
  step(what, { waitedMs: Date.now() - started });
}

// Inside the page: every 50 ms, the mouth region's mean change since the last sample
// (from the face renderer's mouth box), with the avatar's audio level and state.
function startSampler() {
  const video = document.getElementById("avatar-video");
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  let previous = null;
  window.__samples = [];
  setInterval(() => {
    const w = video.videoWidth;
    const h = video.videoHeight;
    if (!w || !h) return;
    canvas.width = w;
    canvas.height = h;
    ctx.drawImage(video, 0, 0, w, h);
    // face.mouth_box: centre (0.50, 0.69), half width 0.135, half height 0.094
    const x0 = Math.floor(0.365 * w);
    const x1 = Math.ceil(0.635 * w);
    const y0 = Math.floor(0.596 * h);
    const y1 = Math.ceil(0.784 * h);
    const mouth = ctx.getImageData(x0, y0, x1 - x0, y1 - y0).data;
    const whole = ctx.getImageData(0, 0, w, h).data;
    let lit = 0;
    for (let i = 0; i < whole.length; i += 4 * 97) lit += whole[i] + whole[i + 1] + whole[i + 2];
    let motion = 0;
    if (previous && previous.length === mouth.length) {
      let sum = 0;
      for (let i = 0; i < mouth.length; i += 4) {
        sum +=
          Math.abs(mouth[i] - previous[i]) +
          Math.abs(mouth[i + 1] - previous[i + 1]) +
          Math.abs(mouth[i + 2] - previous[i + 2]);
      }
      motion = sum / ((mouth.length / 4) * 3);
    }
    previous = mouth;
    const s = window.playground;
    window.__samples.push({
      t: performance.now(),
      wall: Date.now(),
      w,
      h,
      motion,
      brightness: lit / ((whole.length / (4 * 97)) * 3),
      level: s.avatarLevel,
      state: s.avatarState,
      mic: s.micEnabled,
      micLevel: s.micLevel,
      frames: s.videoFrames,
    });
  }, 50);
}

// The bundled echo agent: it echoes a pause, stops when talked over, and goes on
// audio-only once its hosted session is ended from the panel.
async function echoScenario(page) {
  await until(page, "avatar listening", () => window.playground.avatarState === "listening", 90_000);
  // The person talks for a while (the fake microphone keeps playing the file)...
  await page.waitForTimeout(Number(args["talk-seconds"]) * 1000);
  // ...and pauses.
  await page.click("#mic");
  await until(page, "microphone off", () => !window.playground.micEnabled, 10_000);
  step("paused");

  await until(
    page,
    "avatar speaks the echo",
    (level) => window.playground.avatarLevel > level && window.playground.avatarState === "speaking",
    60_000,
    SPEAKING_LEVEL,
  );
  // Let a little of the echo play, take the picture, then talk over it.
  await page.waitForTimeout(700);
  await page.screenshot({ path: join(args.out, "speaking.png") });
  step("screenshot");
  const beforeBargeIn = await page.evaluate(() => window.playground.avatarLevel);
  await page.click("#mic");
  step("talking over the avatar", { avatarLevel: beforeBargeIn });
  await until(page, "microphone on again", () => window.playground.micEnabled, 10_000);
  await until(
    page,
    "agent reports the interruption",
    () => (window.playground.turns?.interrupted ?? 0) >= 1,
    30_000,
  );
  // The avatar must go quiet and stay quiet while the person keeps talking.
  await until(
    page,
    "avatar silent while talked over",
    (silent) => {
      const recent = (window.__samples || []).filter((s) => s.t > performance.now() - 1500);
      return (
        recent.length >= 20 &&
        recent.every((s) => s.level < silent && s.state !== "speaking" && s.mic)
      );
    },
    30_000,
    SILENT_LEVEL,
  );
  await page.waitForTimeout(1000);

  // The sessions panel lists this tab's hosted session; "end" ends it, and the
  // agent reports its avatar lost.
  await until(
    page,
    "session listed as running",
    () => window.playground.sessions.some((s) => s.room_name === window.playground.room && s.status === "running"),
    30_000,
  );
  await page.click("#sessions tr.mine button");
  step("clicked end");
  await until(page, "avatar lost", () => window.playground.avatarState === "lost", 60_000);
  await until(
    page,
    "session listed as ended",
    () => window.playground.sessions.some((s) => s.room_name === window.playground.room && s.status === "ended"),
    30_000,
  );

  // Audio-only from here: the next pause is echoed by the agent itself.
  await page.click("#mic");
  await until(page, "microphone off after the loss", () => !window.playground.micEnabled, 10_000);
  await until(
    page,
    "echo heard without the avatar",
    (level) => window.playground.avatarLevel > level,
    60_000,
    SPEAKING_LEVEL,
  );
}

// An agent that speaks on its own, to a person who listens: the avatar is heard
// with a moving mouth, then goes quiet.
async function speaksScenario(page) {
  await until(
    page,
    "avatar speaks",
    (level) => window.playground.avatarLevel > level,
    90_000,
    SPEAKING_LEVEL,
  );
  await page.waitForTimeout(700);
  await page.screenshot({ path: join(args.out, "speaking.png") });
  step("screenshot");
  await until(
    page,
    "avatar quiet again",
    (silent) => {
      const recent = (window.__samples || []).filter((s) => s.t > performance.now() - 1500);
      return recent.length >= 20 && recent.every((s) => s.level < silent);
    },
    90_000,
    SILENT_LEVEL,
  );
}

// One followed agent: its own avatar's video is shown, advancing, and heard.
async function followedShown(page, what) {
  await until(
    page,
    `${what}: its avatar shown`,
    () => {
      const s = window.playground;
      return Boolean(s.following && s.followingAvatar && s.videoFrom === s.followingAvatar);
    },
    90_000,
  );
  const framesAt = await page.evaluate(() => window.playground.videoFrames);
  await until(page, `${what}: frames advancing`, (from) => window.playground.videoFrames > from + 20, 30_000, framesAt);
  await until(page, `${what}: heard`, (level) => window.playground.avatarLevel > level, 90_000, SPEAKING_LEVEL);
  return page.evaluate(() => {
    const s = window.playground;
    return { following: s.following, followingAvatar: s.followingAvatar, videoFrom: s.videoFrom, agents: s.agents };
  });
}

async function twoScenario(page) {
  await until(page, "two agents in the room", () => window.playground.agents.length === 2, 90_000);
  report.followVisible = await page.isVisible("#follow");
  report.firstFollowed = await followedShown(page, "first followed");
  const other = report.firstFollowed.agents.find((a) => a !== report.firstFollowed.following);
  await page.selectOption("#follow", other);
  step("picked", { other });
  await until(page, "the other agent followed", (o) => window.playground.following === o, 10_000, other);
  report.secondFollowed = await followedShown(page, "second followed");
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${args.wav}`,
  ],
});
let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  page.on("console", (m) => report.console.push(`${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => report.console.push(`pageerror: ${e.message}`));
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));

  const url = new URL(args.url);
  url.searchParams.set("autoconnect", "1");
  await page.goto(url.toString());
  step("loaded");
  await page.evaluate(startSampler);

  await until(page, "connected", () => window.playground.connection === "connected", 60_000);
  await until(page, "microphone on", () => window.playground.micEnabled, 30_000);
  await until(page, "microphone hears speech", () => window.playground.micLevel > 0.01, 30_000);
  if (args.scenario !== "echo") {
    // The person has said a word and now listens: an agent pauses its own speech
    // while someone talks (LiveKit Agents' interruption handling), and a fake
    // microphone never stops talking.
    await page.click("#mic");
    await until(page, "microphone off", () => !window.playground.micEnabled, 10_000);
  }
  await until(page, "video decoded", () => window.playground.videoWidth > 0, 90_000);
  const framesAt = await page.evaluate(() => window.playground.videoFrames);
  await until(
    page,
    "video frames advancing",
    (from) => window.playground.videoFrames > from + 20,
    30_000,
    framesAt,
  );
  if (args.scenario === "echo") await echoScenario(page);
  else if (args.scenario === "two") await twoScenario(page);
  else await speaksScenario(page);
  // The panel sums this tab's hosted sessions: started, and billable seconds.
  await until(
    page,
    "conversation billed",
    () => window.playground.conversation.sessionsStarted >= 1 && window.playground.conversation.billableSeconds >= 1,
    30_000,
  );

  const final = await page.evaluate(() => ({
    ...window.playground,
    events: window.playground.events.map((e) => e.text),
    samples: window.__samples,
    hasLivekitClient: Boolean(window.LivekitClient),
  }));
  report.samples = final.samples;
  delete final.samples;
  report.final = final;
  const pageOrigin = url.origin;
  report.offOriginRequests = requests.filter(
    (r) => !r.startsWith(pageOrigin) && !r.startsWith("data:") && !r.startsWith("blob:"),
  );
  report.pageOrigin = pageOrigin;
  report.scenario = args.scenario;
  if (args.scenario === "echo") {
    report.talkedOverAt = report.steps.find((s) => s.name === "talking over the avatar").at;
    report.echoHeardAt = report.steps.find((s) => s.name === "avatar speaks the echo").at;
  }
} catch (error) {
  report.failed = String(error.message || error);
  exitCode = 1;
} finally {
  await browser.close();
}
writeFileSync(join(args.out, "report.json"), JSON.stringify(report, null, 1));
process.stdout.write(JSON.stringify({ failed: report.failed, steps: report.steps.length }) + "\n");
process.exit(exitCode);
