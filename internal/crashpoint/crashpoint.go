// Package crashpoint lets the crash-safety tests kill the consumer process
// at a chosen point of its work: CONSUMER_CRASH_AT=<point>:<n> makes the
// n-th Hit(point) send SIGKILL to the process itself.
//
// It exists for tests only and is compiled in only with the build tag
// `crashpoints` (the test rig's procs.BuildConsumer sets it). In a release
// build Hit is an empty function the compiler removes, and the variable is
// not read.
package crashpoint

// EnvVar names the variable read at the first Hit.
const EnvVar = "CONSUMER_CRASH_AT"

// Points the code marks.
const (
	AfterWrite   = "after-write"   // a batch committed, its events not yet marked done
	BeforeWrite  = "before-write"  // a batch built, not yet sent
	MidBatch     = "mid-batch"     // some events of a batch decided, others not
	DuringResync = "during-resync" // a repo snapshot fetched, not yet applied
	Reconnect    = "reconnect"     // a stream connection just opened
)
