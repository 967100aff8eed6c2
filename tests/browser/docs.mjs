// The playground works air-gapped: a real headless Chromium loads `${base}/docs` with every
// request to a non-loopback host blocked, runs Try-it-out on GET /healthz through the Swagger UI
// and must see a live 200 response.
//
// Usage: node tests/browser/docs.mjs https://127.0.0.1:PORT
// Needs: Debian's /usr/bin/chromium and playwright-core from tests/peers (tests/run.sh installs
// both). Exit 0 on success; non-zero with one FAIL line per problem otherwise. Never takes longer
// than TOTAL_MS.

import { createRequire } from "node:module";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TOTAL_MS = 55_000;
const STEP_MS = 15_000;
const CHROMIUM = process.env.GATEHOUSE_CHROMIUM || "/usr/bin/chromium";

const require = createRequire(new URL("../peers/package.json", import.meta.url));
let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch (e) {
  console.error(`FAIL: playwright-core not found in tests/peers/node_modules (run tests/run.sh): ${e.message}`);
  process.exit(3);
}

const base = (process.argv[2] || "").replace(/\/+$/, "");
if (!/^https?:\/\//.test(base)) {
  console.error("usage: node tests/browser/docs.mjs https://127.0.0.1:PORT");
  process.exit(64);
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);
const isLoopback = (url) => {
  try {
    const u = new URL(url);
    if (u.protocol === "data:" || u.protocol === "blob:" || u.protocol === "about:") return true;
    return LOOPBACK.has(u.hostname) || /^127\.\d+\.\d+\.\d+$/.test(u.hostname);
  } catch {
    return false;
  }
};

const blocked = []; // non-loopback requests the page tried
const failedRequests = []; // loopback requests that failed
const consoleErrors = [];
const pageErrors = [];
const cspViolations = [];
const log = (msg) => console.log(`[docs.mjs] ${msg}`);

let context;
let profile;
let finished = false;

async function cleanup() {
  if (context) {
    await context.close().catch(() => {});
    context = undefined;
  }
  if (profile) {
    await rm(profile, { recursive: true, force: true }).catch(() => {});
    profile = undefined;
  }
}

// Watchdog: whatever happens, the script ends.
const watchdog = setTimeout(async () => {
  if (finished) return;
  console.error(`FAIL: playground test did not finish within ${TOTAL_MS / 1000} s`);
  setTimeout(() => process.exit(4), 3_000).unref();
  await cleanup();
  process.exit(4);
}, TOTAL_MS);
watchdog.unref();

async function run() {
  profile = await mkdtemp(join(tmpdir(), "gatehouse-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors: true,
    timeout: STEP_MS,
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  context.setDefaultTimeout(STEP_MS);
  context.setDefaultNavigationTimeout(STEP_MS);

  // Air gap: only loopback hosts are reachable.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.continue();
    blocked.push(`${route.request().method()} ${url}`);
    return route.abort("blockedbyclient");
  });

  // CSP violations, reported from inside the page.
  await context.exposeFunction("__gatehouseCspViolation", (v) => cspViolations.push(v));
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__gatehouseCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });

  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => pageErrors.push(String(err && err.stack ? err.stack : err)));
  page.on("requestfailed", (req) => {
    if (isLoopback(req.url())) failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
  });

  log(`loading ${base}/docs`);
  const resp = await page.goto(`${base}/docs`, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) throw new Error(`GET /docs answered ${resp ? resp.status() : "nothing"}`);

  // Swagger UI has rendered the spec once the operations appear.
  await page.locator(".swagger-ui .information-container .title").first().waitFor({ state: "visible" });
  const title = (await page.locator(".swagger-ui .information-container .title").first().innerText()).trim();
  log(`spec rendered: ${title.split("\n")[0]}`);

  const op = page
    .locator(".opblock.opblock-get")
    .filter({ has: page.locator(".opblock-summary-path", { hasText: /^\s*\/healthz\s*$/ }) })
    .first();
  if ((await op.count()) === 0) {
    // The tag section may be collapsed: open every collapsed tag and look again.
    for (const tag of await page.locator(".opblock-tag-section:not(.is-open) .opblock-tag").all()) await tag.click();
  }
  await op.waitFor({ state: "visible" });
  log("expanding GET /healthz");
  await op.locator(".opblock-summary").first().click();

  const tryOut = op.locator("button.try-out__btn");
  await tryOut.waitFor({ state: "visible" });
  log("Try it out");
  await tryOut.click();

  const execute = op.locator("button.execute");
  await execute.waitFor({ state: "visible" });
  log("Execute");
  await execute.click();

  const statusCell = op.locator(".live-responses-table tbody tr.response .response-col_status").first();
  await statusCell.waitFor({ state: "visible" });
  const statusText = (await statusCell.innerText()).trim();
  const status = Number((statusText.match(/\d{3}/) || [])[0]);
  const bodyText = await op
    .locator(".live-responses-table tbody tr.response .response-col_description pre")
    .first()
    .innerText()
    .catch(() => "");
  log(`live response: ${statusText.split("\n")[0]} ${bodyText.replace(/\s+/g, " ").slice(0, 200)}`);
  if (status !== 200) throw new Error(`Try-it-out on GET /healthz showed status "${statusText}", expected 200`);

  // The Authorize dialog offers every credential the API takes.
  log("Authorize");
  await page.locator(".swagger-ui .auth-wrapper button.authorize").first().click();
  const dialog = page.locator(".swagger-ui .dialog-ux .modal-ux");
  await dialog.waitFor({ state: "visible" });
  const dialogText = await dialog.innerText();
  for (const scheme of ["sessionToken", "personalAccessToken", "apiKey", "sessionCookie", "metricsToken"]) {
    if (!dialogText.includes(scheme)) throw new Error(`the Authorize dialog does not offer ${scheme}`);
  }
  await dialog.locator("button.close-modal").first().click();

  // Let late console messages and violation reports arrive.
  await page.waitForTimeout(300);
}

let failure;
try {
  await run();
} catch (e) {
  failure = e;
}
finished = true;
await cleanup();
clearTimeout(watchdog);

const problems = [];
if (failure) {
  // eslint-disable-next-line no-control-regex
  const msg = String(failure.message || failure).replace(/\x1b\[[0-9;]*m/g, "");
  problems.push(`flow failed: ${msg.split("\n").slice(0, 6).join("\n  ")}`);
}
for (const b of blocked) problems.push(`the page tried a non-loopback request (not air-gapped): ${b}`);
for (const v of cspViolations) problems.push(`CSP violation: ${v}`);
for (const c of consoleErrors) problems.push(`console error: ${c}`);
for (const p of pageErrors) problems.push(`uncaught page error: ${p}`);
for (const f of failedRequests) problems.push(`request failed: ${f}`);

if (problems.length) {
  for (const p of problems) console.error(`FAIL: ${p}`);
  process.exit(1);
}
log("OK: playground Try-it-out on GET /healthz returned 200 with no external request, CSP violation or console error");
process.exit(0);
