package firehose_test

import (
	"testing"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/view"
)

// BenchmarkDecodeFrameNoMatch is the consumer's hot path alone (for
// profiling): decode a relay frame whose ops match no rule.
func BenchmarkDecodeFrameNoMatch(b *testing.B) {
	for _, which := range []string{"relay-corpus", "synthetic"} {
		frames := loadFrames(b, which)
		rules := view.DefaultRules()
		b.Run(which, func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				fr, err := firehose.DecodeFrame(frames[i%len(frames)], rules.MatchPath)
				if err != nil {
					b.Fatal(err)
				}
				fr.DecodeRecords()
			}
		})
	}
}
