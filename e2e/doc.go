// Package e2e proves the mission with real parts nobody on this team wrote:
// the reference PDS from npm (with a local PLC), SpiceDB `serve` with a
// preshared key, and the consumer built and run as a separate process. The
// tests are behind the `e2e` build tag; `make test` runs them.
//
// The oracle the tests compare SpiceDB with is computed independently, from
// the PDS's current records (com.atproto.repo.listRecords) and the rules.
package e2e
