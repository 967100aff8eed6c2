// A real OpenID provider (npm oidc-provider) for Gatehouse's integration tests, on loopback only.
//
//   node tests/peers/oidc/idp.mjs CONFIG.json
//
// Serves HTTPS with the given certificate, prints one JSON line {"issuer","port"} to stdout once
// it listens, and logs only to stderr after that. See README.md beside this file for the config
// schema and the /__test/ control endpoints.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

// oidc-provider prints its notices with console.info (stdout). Stdout carries exactly one line
// (the readiness line), so every console method goes to stderr, and oidc-provider is imported
// only after this redirect.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const { default: Provider } = await import('oidc-provider');
const jose = await import('jose');

const log = (...args) => console.error('[idp]', ...args);

// ---------------------------------------------------------------------------------------------
// configuration

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node idp.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const host = config.host || '127.0.0.1';
const listenPort = Number(config.port || 0);
const idTokenClaims = config.id_token_claims !== false;
const extraClaimNames = Array.isArray(config.extra_claims) ? config.extra_claims : [];
if (!config.tls?.cert || !config.tls?.key) throw new Error('config.tls.cert and config.tls.key are required');
if (!config.users_file) throw new Error('config.users_file is required');
if (!Array.isArray(config.clients) || !config.clients.length) throw new Error('config.clients must be a non-empty array');

// ---------------------------------------------------------------------------------------------
// users: re-read from disk on every login and every claims lookup

function readUsers() {
  const users = JSON.parse(fs.readFileSync(config.users_file, 'utf8'));
  if (!Array.isArray(users)) throw new Error('users_file must hold a JSON array');
  return users;
}

function findUserBySub(sub) {
  return readUsers().find((u) => String(u.sub) === String(sub));
}

function findUserByLogin(login) {
  return readUsers().find((u) => String(u.sub) === login || (u.email !== undefined && String(u.email) === login));
}

function claimsOf(user) {
  const claims = { sub: String(user.sub) };
  for (const key of ['email', 'email_verified', 'name', 'groups']) {
    if (user[key] !== undefined) claims[key] = user[key];
  }
  if (user.nested && typeof user.nested === 'object' && !Array.isArray(user.nested)) {
    Object.assign(claims, user.nested);
  }
  return claims;
}

// oidc-provider only releases claims that its configuration names, fixed when a Provider is
// built: the keys of every user's `nested` object at that time (start, rotate-keys), plus the
// optional config `extra_claims`, are released with the `groups` scope.
function nestedClaimNames() {
  const names = new Set(extraClaimNames);
  try {
    for (const user of readUsers()) {
      if (user.nested && typeof user.nested === 'object') Object.keys(user.nested).forEach((k) => names.add(k));
    }
  } catch (err) {
    log('cannot read users_file for nested claim names:', err.message);
  }
  for (const standard of ['sub', 'email', 'email_verified', 'name', 'groups']) names.delete(standard);
  return [...names];
}

// ---------------------------------------------------------------------------------------------
// keys

function newKid() {
  return crypto.randomBytes(12).toString('base64url');
}

function generateKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = newKid();
  return { alg, kid, privateKey, jwk: { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' } };
}

function generateSigningKeys() {
  return { RS256: generateKey('RS256'), ES256: generateKey('ES256') };
}

let currentKeys = generateSigningKeys();
// Generated once, never published: a test presents a token signed by it under a valid kid.
const foreignKeys = generateSigningKeys();
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

// ---------------------------------------------------------------------------------------------
// test state

let overrideNextIdToken = null;
let lastAuthRequest = null;

// ---------------------------------------------------------------------------------------------
// the provider

function buildProvider(issuer) {
  const nested = nestedClaimNames();
  const clients = config.clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...c,
  }));

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [currentKeys.RS256.jwk, currentKeys.ES256.jwk] },
    cookies: {
      keys: cookieKeys,
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups', ...nested],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    conformIdTokenClaims: !idTokenClaims,
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    interactions: {
      // absolute, so the Location of the /auth redirect needs no resolving
      url: (ctx, interaction) => new URL(`/interaction/${interaction.uid}`, ctx.oidc.issuer).href,
    },
    async findAccount(ctx, sub) {
      const user = findUserBySub(sub);
      if (!user) return undefined;
      return {
        accountId: String(user.sub),
        async claims() {
          // Read the file again: a test may have changed it since findAccount.
          const fresh = findUserBySub(sub) || user;
          return claimsOf(fresh);
        },
      };
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      RefreshToken: 14 * 24 * 3600,
      ClientCredentials: 600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><title>oidc error</title></head><body><h1>Error</h1>${Object.entries(out)
        .map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('')}</body></html>`;
    },
  });

  // The one-shot ID token override, on successful token endpoint responses.
  provider.use(async (ctx, next) => {
    await next();
    if (
      overrideNextIdToken !== null
      && ctx.oidc?.route === 'token'
      && ctx.status === 200
      && ctx.body && typeof ctx.body === 'object'
      && 'id_token' in ctx.body
    ) {
      ctx.body = { ...ctx.body, id_token: overrideNextIdToken };
      log('token response: id_token replaced by the override');
      overrideNextIdToken = null;
    }
  });

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'end_session.error', 'jwks.error', 'discovery.error']) {
    provider.on(event, (ctx, err) => {
      log(`${event}: ${err?.name}: ${err?.message}${err?.error_description ? ` (${err.error_description})` : ''}`);
    });
  }

  return { provider, callback: provider.callback(), nested };
}

// ---------------------------------------------------------------------------------------------
// helpers

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
  });
  res.end(html);
}

function loginPage(uid, { error, login = '', clientId = '' } = {}) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body>
<h1>Sign in</h1>
${clientId ? `<p>to continue to <code>${esc(clientId)}</code></p>` : ''}
${error ? `<p id="error" class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <label>Login <input type="text" name="login" id="login" value="${esc(login)}" autofocus></label><br>
  <label>Password <input type="password" name="password" id="password"></label><br>
  <button type="submit" id="submit">Sign in</button>
</form>
</body>
</html>
`;
}

// A Grant with everything the client asked for, as for a first-party app: no consent screen.
async function autoGrant(provider, interaction, accountId) {
  const { params, prompt } = interaction;
  const details = prompt?.details || {};
  let grant;
  if (interaction.grantId) grant = await provider.Grant.find(interaction.grantId);
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });

  const scopes = new Set(String(params.scope || '').split(' ').filter(Boolean));
  for (const scope of details.missingOIDCScope || []) scopes.add(scope);
  if (scopes.size) grant.addOIDCScope([...scopes].join(' '));
  if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, resourceScopes] of Object.entries(details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, resourceScopes.join(' '));
  }
  return grant.save();
}

// ---------------------------------------------------------------------------------------------
// interactions (login and consent), outside oidc-provider's routes

async function handleInteraction(req, res, url, current) {
  const { provider } = current;
  const match = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?\/?$/);
  if (!match) return sendHtml(res, 404, '<p>not found</p>');
  const [, uid, isLogin] = match;

  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    const why = err.error_description || err.message;
    log(`interaction ${uid}: ${err.name}: ${why}`);
    return sendHtml(res, 400, `<p>interaction error: ${esc(why)}</p>`);
  }
  if (interaction.uid !== uid) {
    return sendHtml(res, 400, '<p>interaction error: cookie and URL do not match</p>');
  }

  const promptName = interaction.prompt?.name;

  if (!isLogin && req.method === 'GET') {
    if (promptName === 'consent') {
      const accountId = interaction.session?.accountId;
      const grantId = await autoGrant(provider, interaction, accountId);
      log(`interaction ${uid}: consent granted automatically (grant ${grantId})`);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return sendHtml(res, 200, loginPage(uid, { clientId: interaction.params.client_id }));
  }

  if (isLogin && req.method === 'POST') {
    if (promptName !== 'login') {
      return sendHtml(res, 400, `<p>interaction error: prompt is ${esc(promptName)}, not login</p>`);
    }
    const form = new URLSearchParams(await readBody(req));
    const login = form.get('login') || '';
    const password = form.get('password') || '';
    let user;
    try {
      user = findUserByLogin(login);
    } catch (err) {
      log('cannot read users_file:', err.message);
      return sendHtml(res, 500, '<p>users_file unreadable</p>');
    }
    if (!user || user.password === undefined || String(user.password) !== password) {
      log(`interaction ${uid}: wrong login or password for ${JSON.stringify(login)}`);
      return sendHtml(res, 200, loginPage(uid, {
        error: 'Invalid login or password.', login, clientId: interaction.params.client_id,
      }));
    }
    const accountId = String(user.sub);
    const grantId = await autoGrant(provider, interaction, accountId);
    log(`interaction ${uid}: ${accountId} logged in, consent granted automatically (grant ${grantId})`);
    return provider.interactionFinished(req, res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  res.setHeader('allow', isLogin ? 'POST' : 'GET');
  return sendHtml(res, 405, '<p>method not allowed</p>');
}

// ---------------------------------------------------------------------------------------------
// /__test/ control endpoints

async function signJwt({ alg, key = 'current', claims = {}, header = {} }) {
  if (!claims || typeof claims !== 'object' || Array.isArray(claims)) throw new Error('claims must be an object');
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw new Error('header must be an object');
  const payload = Buffer.from(JSON.stringify(claims), 'utf8');

  if (alg === 'none') {
    const protectedHeader = { alg: 'none', ...header };
    const b64 = (v) => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');
    return `${b64(protectedHeader)}.${payload.toString('base64url')}.`;
  }
  if (alg !== 'RS256' && alg !== 'ES256') throw new Error('alg must be RS256, ES256 or none');
  if (key !== 'current' && key !== 'foreign') throw new Error('key must be current or foreign');

  const signer = key === 'current' ? currentKeys[alg] : foreignKeys[alg];
  const protectedHeader = { alg, kid: currentKeys[alg].kid, ...header };
  protectedHeader.alg = alg;
  if (protectedHeader.kid === null) delete protectedHeader.kid;
  return new jose.CompactSign(payload).setProtectedHeader(protectedHeader).sign(signer.privateKey);
}

async function handleTest(req, res, url, server) {
  try {
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'POST /__test/rotate-keys': {
        await readBody(req);
        const old = [currentKeys.RS256.kid, currentKeys.ES256.kid];
        currentKeys = generateSigningKeys();
        server.current = buildProvider(server.issuer);
        const kids = [currentKeys.RS256.kid, currentKeys.ES256.kid];
        log(`keys rotated: ${old.join(',')} -> ${kids.join(',')}`);
        return sendJson(res, 200, { kids, RS256: currentKeys.RS256.kid, ES256: currentKeys.ES256.kid });
      }
      case 'POST /__test/sign': {
        const body = JSON.parse(await readBody(req) || '{}');
        return sendJson(res, 200, { jwt: await signJwt(body) });
      }
      case 'POST /__test/override-next-id-token': {
        const body = JSON.parse(await readBody(req) || '{}');
        if (typeof body.jwt !== 'string') throw new Error('jwt must be a string');
        overrideNextIdToken = body.jwt;
        return sendJson(res, 200, { ok: true });
      }
      case 'GET /__test/last-auth-request': {
        if (!lastAuthRequest) return sendJson(res, 404, { error: 'no authorization request yet' });
        return sendJson(res, 200, lastAuthRequest);
      }
      case 'GET /__test/keys': {
        return sendJson(res, 200, {
          current: { RS256: currentKeys.RS256.kid, ES256: currentKeys.ES256.kid },
          foreign: { RS256: foreignKeys.RS256.kid, ES256: foreignKeys.ES256.kid },
        });
      }
      default:
        return sendJson(res, 404, { error: `no test endpoint ${route}` });
    }
  } catch (err) {
    log(`test endpoint ${url.pathname}: ${err.message}`);
    return sendJson(res, 400, { error: err.message });
  }
}

// ---------------------------------------------------------------------------------------------
// strict client authentication
//
// oidc-provider accepts client_secret_basic and client_secret_post interchangeably for a client
// registered with either. This peer holds each client to the one method its config names, so a
// test fails when Gatehouse authenticates the wrong way. The body is read here and handed on as
// req.body, which oidc-provider uses for an already-read request (it logs a one-time warning).

const clientAuthRoutes = new Set(['/token', '/token/revocation', '/token/introspection', '/request']);
const strictClientAuth = config.strict_client_auth !== false;

function clientAuthMismatch(req, body) {
  const form = new URLSearchParams(body);
  const header = req.headers.authorization;
  let clientId = form.get('client_id');
  let used;
  if (header && /^basic /i.test(header)) {
    used = 'client_secret_basic';
    try {
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      if (!decoded.includes(':')) return undefined;
      clientId = decodeURIComponent(decoded.slice(0, decoded.indexOf(':')).replace(/\+/g, ' '));
    } catch {
      return undefined; // malformed: oidc-provider answers it
    }
  } else if (form.has('client_secret')) {
    used = 'client_secret_post';
  } else {
    return undefined; // another method or none: oidc-provider answers it
  }
  const client = config.clients.find((c) => c.client_id === clientId);
  if (!client) return undefined;
  const expected = client.token_endpoint_auth_method || 'client_secret_basic';
  if (expected !== used) return `client ${clientId} must authenticate with ${expected}, not ${used}`;
  return undefined;
}

async function handleClientAuthRoute(req, res, current) {
  const body = await readBody(req, 56 * 1024);
  req.body = body;
  const mismatch = strictClientAuth && /application\/x-www-form-urlencoded/i.test(req.headers['content-type'] || '')
    ? clientAuthMismatch(req, body) : undefined;
  if (mismatch) {
    log(`${req.url}: invalid_client: ${mismatch}`);
    return sendJson(res, 401, { error: 'invalid_client', error_description: mismatch });
  }
  return current.callback(req, res);
}

// ---------------------------------------------------------------------------------------------
// server

const server = https.createServer({
  cert: fs.readFileSync(config.tls.cert),
  key: fs.readFileSync(config.tls.key),
}, (req, res) => {
  const url = new URL(req.url, server.issuer);
  const current = server.current;
  let work;
  if (url.pathname.startsWith('/__test/')) {
    work = handleTest(req, res, url, server);
  } else if (url.pathname.startsWith('/interaction/')) {
    work = handleInteraction(req, res, url, current);
  } else if (req.method === 'POST' && clientAuthRoutes.has(url.pathname)) {
    work = handleClientAuthRoute(req, res, current);
  } else {
    if (req.method === 'GET' && url.pathname === current.provider.pathFor('authorization')) {
      lastAuthRequest = Object.fromEntries(url.searchParams);
    }
    current.callback(req, res);
    return;
  }
  work.catch((err) => {
    log(`unhandled error on ${req.method} ${url.pathname}:`, err);
    if (!res.headersSent) sendHtml(res, 500, '<p>internal error</p>');
    else res.destroy();
  });
});

server.on('tlsClientError', (err) => log('TLS client error:', err.message));

server.listen(listenPort, host, () => {
  const { port } = server.address();
  const hostPart = host.includes(':') ? `[${host}]` : host;
  server.issuer = `https://${hostPart}:${port}`;
  server.current = buildProvider(server.issuer);
  log(`listening as ${server.issuer}; RS256 kid ${currentKeys.RS256.kid}, ES256 kid ${currentKeys.ES256.kid}; `
    + `id_token_claims=${idTokenClaims}; nested claims released with scope groups: ${server.current.nested.join(',') || '(none)'}`);
  process.stdout.write(`${JSON.stringify({ issuer: server.issuer, port })}\n`);
});

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
