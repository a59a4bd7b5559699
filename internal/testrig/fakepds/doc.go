// Package fakepds is the test rig's stand-in for a PDS: it builds real,
// signed repo commits with indigo's repo library and serves them over a real
// websocket as com.atproto.sync.subscribeRepos frames (CBOR), together with
// com.atproto.sync.getRepo and listRepos. Tests script it: accounts,
// creates/updates/deletes, #sync, #account, #identity, #info, error frames,
// dropped connections, frames cut in the middle, garbage and oversized frames.
//
// It speaks the real protocol, so the consumer under test can't tell it from
// a PDS; it is not a mock of SpiceDB or NATS and never stands in for them.
package fakepds
