// SSO in a real browser: headless Chromium opens Gatehouse's sign-in page at `${base}/login`,
// clicks the identity provider's button, fills and submits the provider's own login form, and
// must land back on `${base}/login` signed in (the page shows who, read from /v1/me with the
// session cookie the callback set).
//
// Usage: node tests/browser/sso.mjs https://127.0.0.1:PORT PROVIDER_ID LOGIN PASSWORD [oidc|saml]
// `oidc` (the default): the oidc-provider peer's form (fields `login`, `password`, button
// `#submit`). `saml`: the pysaml2 peer's form (`username`, `password`, `#login`), whose answer is
// an auto-submitting form that POSTs the Response to Gatehouse's ACS (a cross-site POST).
// Needs: Debian's /usr/bin/chromium and playwright-core from tests/peers (tests/run.sh installs
// both). Exit 0 on success; non-zero with a FAIL line otherwise. Never takes longer than TOTAL_MS.

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

const [baseArg, provider, login, password, kindArg] = process.argv.slice(2);
const kind = kindArg || "oidc";
const form = kind === "saml"
  ? { user: 'input[name="username"]', submit: "#login" }
  : { user: 'input[name="login"]', submit: "#submit" };
const base = (baseArg || "").replace(/\/+$/, "");
if (!/^https?:\/\//.test(base) || !provider || !login || !password || !["oidc", "saml"].includes(kind)) {
  console.error("usage: node tests/browser/sso.mjs https://127.0.0.1:PORT PROVIDER_ID LOGIN PASSWORD");
  process.exit(64);
}

const log = (msg) => console.log(`[sso.mjs] ${msg}`);
const cspViolations = [];
const pageErrors = [];
let context;
let profile;
let finished = false;

async function cleanup() {
  if (context) await context.close().catch(() => {});
  if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
  context = undefined;
  profile = undefined;
}

const watchdog = setTimeout(async () => {
  if (finished) return;
  console.error(`FAIL: SSO browser test did not finish within ${TOTAL_MS / 1000} s`);
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
    // Gatehouse's certificate is self-signed; the provider's is signed by the test's own CA.
    ignoreHTTPSErrors: true,
    timeout: STEP_MS,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  context.setDefaultTimeout(STEP_MS);
  context.setDefaultNavigationTimeout(STEP_MS);
  await context.exposeFunction("__gatehouseCspViolation", (v) => cspViolations.push(v));
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__gatehouseCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"} at ${e.sourceFile}`);
    });
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (err) => pageErrors.push(String(err && err.stack ? err.stack : err)));

  log(`loading ${base}/login`);
  const resp = await page.goto(`${base}/login`, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) throw new Error(`GET /login answered ${resp ? resp.status() : "nothing"}`);
  if (await page.locator("#whoami").isVisible()) throw new Error("signed in before the login");

  const button = page.locator(`#sso-${provider}`);
  await button.waitFor({ state: "visible" });
  log(`clicking "${(await button.innerText()).trim()}"`);
  await button.click();

  // The provider's own login form.
  const loginField = page.locator(form.user);
  await loginField.waitFor({ state: "visible" });
  log(`at the identity provider: ${new URL(page.url()).origin}`);
  if (page.url().startsWith(base)) throw new Error(`the button did not leave Gatehouse: ${page.url()}`);
  await loginField.fill(login);
  await page.locator('input[name="password"]').fill(password);
  log("submitting the provider's form");
  await Promise.all([page.waitForURL(`${base}/login**`), page.locator(form.submit).click()]);

  const who = page.locator("#whoami");
  await who.waitFor({ state: "visible" });
  const text = (await who.innerText()).trim();
  log(`back in Gatehouse: ${text}`);
  if (!text.includes(login)) throw new Error(`the page says "${text}", expected it to name ${login}`);
  const cookies = await context.cookies(base);
  if (!cookies.some((c) => c.name === "__Host-gatehouse_session" && c.httpOnly && c.secure)) {
    throw new Error("no HTTP-only, Secure session cookie after the login");
  }
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
// eslint-disable-next-line no-control-regex
if (failure) problems.push(`flow failed: ${String(failure.message || failure).replace(/\x1b\[[0-9;]*m/g, "").split("\n").slice(0, 6).join("\n  ")}`);
for (const v of cspViolations) problems.push(`CSP violation: ${v}`);
for (const p of pageErrors) problems.push(`uncaught page error: ${p}`);
if (problems.length) {
  for (const p of problems) console.error(`FAIL: ${p}`);
  process.exit(1);
}
log("OK");
process.exit(0);
