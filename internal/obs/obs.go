// Package obs holds what the components' metrics share: the product's
// metric prefix and the one metric two components feed.
package obs

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric the consumer exports (spaces_authz_*),
// as jetstream_*, relay_* and spicedb_* prefix those of the services
// around it.
const Namespace = "spaces_authz"

// Stages of spaces_authz_duplicate_events_total (its `stage` label).
const (
	// StageStream: the stream reader dropped an event whose seq it had
	// already handed on in this run (the PDS replays from the watermark
	// after a reconnect). Nothing downstream sees it.
	StageStream = "stream"
	// StageProjection: the projector skipped an event its repo had already
	// applied (rev, or account seq, at or below the stored one: a replay
	// after a restart from the stored cursor, or a rewind). Nothing is
	// written to SpiceDB for it.
	StageProjection = "projection"
)

// DuplicateEvents returns the duplicate-events counter registered on reg,
// registering it on first use: the stream client and the projector both
// count into it, each with its stage.
func DuplicateEvents(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "duplicate_events_total",
		Help: "Events seen again and dropped, changing nothing, by stage: stream = a seq the reader had already " +
			"delivered (the PDS replays from the watermark after a reconnect); projection = an event its repo " +
			"had already applied (rev or account seq at or below the stored one: a restart from the stored " +
			"cursor, a rewind)."}, []string{"stage"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err) // as MustRegister: a conflicting metric of the same name
		}
		c = are.ExistingCollector.(*prometheus.CounterVec)
	}
	for _, s := range []string{StageStream, StageProjection} {
		c.WithLabelValues(s)
	}
	return c
}
